import {
  AdmissionController,
  type AdmissionControllerOptions,
} from "../../../src/admission/admission-controller.js";
import type { Lease } from "../../../src/admission/lease.js";

/** A promise's outcome, readable synchronously once microtasks have run. */
export interface Tracked<T> {
  state: "pending" | "fulfilled" | "rejected";
  value: T | undefined;
  reason: unknown;
}

/** Follows `p` without awaiting it, so a test can ask "still waiting?". */
export function track<T>(p: Promise<T>): Tracked<T> {
  const t: Tracked<T> = { state: "pending", value: undefined, reason: undefined };
  p.then(
    (v) => {
      t.state = "fulfilled";
      t.value = v;
    },
    (e: unknown) => {
      t.state = "rejected";
      t.reason = e;
    },
  );
  return t;
}

/** Lets every queued microtask (promise reactions) run. */
export function flush(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** The lease of a fulfilled tracked acquire; fails the test otherwise. */
export function leaseOf(t: Tracked<Lease>): Lease {
  if (t.state !== "fulfilled" || t.value === undefined) {
    throw new Error(`expected a granted lease, got ${t.state}`);
  }
  return t.value;
}

/** A controller with FermiLink-ish small limits; override what the test needs. */
export function makeController(
  opts: Partial<AdmissionControllerOptions> = {},
): AdmissionController {
  return new AdmissionController({
    globalLimit: 1,
    perUserLimit: 1,
    maxQueueSize: 0,
    maxPendingPerUser: 0,
    ...opts,
  });
}

/** Deterministic PRNG (mulberry32), so a failing random run can be replayed by seed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
