import type { Lease } from "./lease.js";

/** One queued request (an entry of FermiLink's `pending` list, spec §3). */
export interface Waiter {
  /** Normalised admission key. */
  readonly userKey: string;
  /** Clock reading when it was queued, for `Lease.waitedMs`. */
  readonly enqueuedAt: number;
  readonly resolve: (lease: Lease) => void;
  readonly reject: (reason: unknown) => void;
  readonly signal: AbortSignal | undefined;
  /** The abort listener on `signal`, kept so the grant can detach it. */
  readonly onAbort: () => void;
  readonly onQueueUpdate: ((position: number, queueSize: number) => void) | undefined;
  /** Last values passed to `onQueueUpdate` (0 = never called). */
  lastPosition: number;
  lastSize: number;
}

/**
 * The FIFO of waiters with its per-key pending counts, and the bookkeeping
 * that tells waiters their position. Policy (who may run) stays in the
 * controller; this only keeps order and counts consistent.
 */
export class WaitQueue {
  #items: Waiter[] = [];
  readonly #pendingByKey = new Map<string, number>();
  /** Bumped on every change, so position updates run only when something moved. */
  #version = 0;
  #notifiedVersion = 0;

  /** Waiters in the queue. */
  get size(): number {
    return this.#items.length;
  }

  /** Waiters queued under `key`. */
  pendingFor(key: string): number {
    return this.#pendingByKey.get(key) ?? 0;
  }

  /** Appends at the tail. */
  push(w: Waiter): void {
    this.#items.push(w);
    increment(this.#pendingByKey, w.userKey);
    this.#version++;
  }

  /** Takes `w` out wherever it is; false if it was not queued. O(queue). */
  remove(w: Waiter): boolean {
    const i = this.#items.indexOf(w);
    if (i < 0) return false;
    this.#items.splice(i, 1);
    decrement(this.#pendingByKey, w.userKey);
    this.#version++;
    return true;
  }

  /**
   * One FIFO pass: each waiter for which `take` returns true leaves the queue
   * (the controller grants it inside `take`). O(queue), one array rebuild.
   */
  drain(take: (w: Waiter) => boolean): void {
    const kept: Waiter[] = [];
    for (const w of this.#items) {
      if (take(w)) decrement(this.#pendingByKey, w.userKey);
      else kept.push(w);
    }
    if (kept.length !== this.#items.length) {
      this.#items = kept;
      this.#version++;
    }
  }

  /** True when positions changed since the last `notifyPositions` pass began. */
  get moved(): boolean {
    return this.#notifiedVersion !== this.#version;
  }

  /**
   * Calls `onQueueUpdate` for each waiter whose 1-based position or the queue
   * size changed since its last call. Stops early if a callback changes the
   * queue; `moved` is then true again and the caller runs another pass, so no
   * waiter is told a stale position.
   */
  notifyPositions(): void {
    const version = this.#version;
    this.#notifiedVersion = version;
    const items = this.#items;
    const size = items.length;
    for (let i = 0; i < size && this.#version === version; i++) {
      const w = items[i];
      const cb = w?.onQueueUpdate;
      const position = i + 1;
      if (!w || !cb || (w.lastPosition === position && w.lastSize === size)) continue;
      w.lastPosition = position;
      w.lastSize = size;
      safeCall(() => cb(position, size));
    }
  }
}

/** Adds one to a per-key count. */
export function increment(m: Map<string, number>, key: string): void {
  m.set(key, (m.get(key) ?? 0) + 1);
}

/** Takes one from a per-key count, deleting the key at 0 so maps stay small. */
export function decrement(m: Map<string, number>, key: string): void {
  const n = m.get(key) ?? 0;
  if (n <= 1) m.delete(key);
  else m.set(key, n - 1);
}

/**
 * Runs a caller's callback. One that throws must not break admission for
 * everyone, so the error is rethrown from a microtask (an uncaught exception,
 * loud) after the controller's state is already consistent.
 */
export function safeCall(fn: () => void): void {
  try {
    fn();
  } catch (err) {
    queueMicrotask(() => {
      throw err;
    });
  }
}
