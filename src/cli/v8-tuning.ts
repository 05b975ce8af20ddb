import { getHeapSpaceStatistics, setFlagsFromString } from "node:v8";

/**
 * V8 flags the server sets for itself at start-up, so every way of starting it
 * (`npm start`, the `fermilink-runner serve` bin) gets them.
 *
 * `--no-allocation-site-pretenuring`: V8 "tenures" an allocation site once
 * most of its objects survive a scavenge, and then allocates them straight in
 * the old generation. A run's journal keeps its newest events for live
 * viewers, so when the young generation is small (after a mark-compact or the
 * memory reducer shrank it) most recent events are alive at a scavenge and
 * their sites get tenured: every later event of the run becomes old-generation
 * garbage, its young parts promoted through the remembered set. Measured with
 * the young generation capped at 8 MB, over a runner's life of one full-speed
 * and one paused 100,000-line run: 82-88 MB promoted in 12 of 12 processes,
 * 14-17 MB in 6 of 6 with the flag. The same pattern made the +18-43 MB
 * paused-client outliers at default sizes. Stream throughput measured the
 * same either way.
 */
export const TUNED_V8_FLAGS = ["--no-allocation-site-pretenuring"] as const;

/** Set `TUNED_V8_FLAGS`; call before the server allocates anything of note. */
export function tuneV8(): readonly string[] {
  for (const flag of TUNED_V8_FLAGS) setFlagsFromString(flag);
  return TUNED_V8_FLAGS;
}

/**
 * Node flags for the command that starts the server: package.json's `start`,
 * the bin's shebang and the bench all pass these (a test holds them to it),
 * because V8 fixes its heap sizes before any of our code runs.
 *
 * `--min-semi-space-size=16`: the young generation starts at the 16 MB
 * semi-spaces V8 grows it to in the first busy run anyway, and idle-time
 * collections can no longer shrink it back, so one busy run after another
 * does not regrow it.
 */
export const NODE_START_FLAGS = ["--min-semi-space-size=16"] as const;

/** Objects (≈ 0.3 KB each) allocated between two looks at the young generation: ≈ 4 MB. */
const PRETOUCH_STEP = 16_384;
/** An upper bound on the work (≈ 80 MB allocated), whatever V8 decides. */
const PRETOUCH_MAX_STEPS = 20;

function youngGeneration(): { size: number; resident: number } {
  const s = getHeapSpaceStatistics().find((x) => x.space_name === "new_space");
  return { size: s?.space_size ?? 0, resident: s?.physical_space_size ?? 0 };
}

/**
 * Make the young generation resident at start-up, as a JVM's AlwaysPreTouch
 * does for its heap: allocate short-lived objects until both semi-spaces have
 * been used, so that a runner's first busy run does not grow its RSS by their
 * ≈ 32 MB (the page faults, ≈ 0.1 s, are then paid here). A client pausing in
 * the first 100,000-line run of a fresh runner saw the server grow by
 * +27-46 MB; with this, `NODE_START_FLAGS` and the file-system worker started
 * with the server and a 512 KiB SQLite page cache, by +10-13 MB (README
 * "Performance" has today's figure). Returns the young generation's resident MB.
 */
export function pretouchYoungGeneration(): number {
  // A ring of recent objects survives each scavenge, as a busy run's do: V8 grows the young
  // generation only for allocations with survivors (without the flag above).
  const ring: unknown[] = new Array(1024);
  let last = youngGeneration();
  for (let step = 0; step < PRETOUCH_MAX_STEPS; step++) {
    for (let i = 0; i < PRETOUCH_STEP; i++) ring[i % ring.length] = new Array(32).fill(i);
    const now = youngGeneration();
    if (now.resident >= now.size && now.size === last.size && step > 0) break;
    last = now;
  }
  return Math.round(youngGeneration().resident / 1024 / 1024);
}

/**
 * Pay at start-up what a process loads on first use, so that a runner's first
 * run grows its memory no more than later runs do. The first
 * `Date#toISOString` in a process faults in ≈ 0.6 MB of node's read-only data
 * (a new session's memory file is dated with it). A main-process test holds
 * a first run's growth of node's own pages under 400 KB.
 */
export function preloadFirstUse(): void {
  new Date(0).toISOString();
}
