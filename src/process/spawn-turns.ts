/**
 * Starting a provider costs CPU the runner needs for the runs still
 * preparing: without the spawn helper, spawn() forks the runner and blocks
 * its event loop for milliseconds; with it, the helper's fork and the new
 * CLI's start-up (a node CLI burns 100 ms of CPU or more) compete for the
 * same cores. Under a burst of new runs, starting providers as soon as each
 * run is ready would hold every later caller's first byte (and ops answers)
 * behind them. Spawns therefore take turns: one per event-loop iteration,
 * and a spawn waits, up to a bound, for the runs that were preparing their
 * workspace (about to send their first event) when it became ready, so first
 * bytes go out before process creation. Runs that begin later do not hold it
 * back: under a steady stream of new runs, spawns still go. Likewise while a
 * flood of callers is still arriving: each is answered (a 429 when the queue
 * is full) before the CLIs of those admitted start taking the cores.
 */
let lastTurn: Promise<void> = Promise.resolve();

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Resolves when it is this caller's turn to spawn. `othersFirst` says whether
 * work that should go before a fork is pending; it is waited for at most
 * `maxWaitMs` from when the turn came up. A run whose `signal` aborts (its
 * caller left, a cancel, shutdown) stops waiting at once, so its slot and
 * session go without waiting for the turns before it, and its own turn, when
 * it comes, is passed on at once.
 */
export function nextSpawnTurn(
  othersFirst: () => boolean = () => false,
  maxWaitMs = 1000,
  signal?: AbortSignal,
): Promise<void> {
  const turn = lastTurn.then(async () => {
    await new Promise<void>((resolve) => setImmediate(resolve));
    const deadline = Date.now() + maxWaitMs;
    while (!signal?.aborted && othersFirst() && Date.now() < deadline) await sleep(2);
  });
  lastTurn = turn;
  if (signal === undefined) return turn;
  return new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    const left = () => resolve();
    signal.addEventListener("abort", left, { once: true });
    void turn.then(() => {
      signal.removeEventListener("abort", left);
      resolve();
    });
  });
}

/**
 * Runs preparing their workspace (each holds its slot and its session), by
 * when they began: a Set iterates in insertion order, so its first entry is
 * the oldest.
 */
const preparing = new Set<number>();
let preparingBegun = 0;

/** A run begins preparing; call the result once it is ready to spawn, or has failed. */
export function notePreparing(): () => void {
  preparingBegun += 1;
  const id = preparingBegun;
  preparing.add(id);
  return () => {
    preparing.delete(id);
  };
}

/** How many runs are preparing now (tests). */
export function runsPreparing(): number {
  return preparing.size;
}

/**
 * For `nextSpawnTurn`: true while a run that was preparing when this was
 * made still is. Runs that begin preparing afterwards do not count.
 */
export function runsPreparingBefore(): () => boolean {
  const last = preparingBegun;
  return () => {
    const oldest: number | undefined = preparing.values().next().value;
    return oldest !== undefined && oldest <= last;
  };
}

/** A caller within this long of the last keeps a flood "arriving". */
const ARRIVAL_GAP_MS = 10;
/**
 * A flood holds spawns back for at most its first second: callers retrying
 * 429s without pause must not slow every later provider start.
 */
const FLOOD_HOLD_MS = 1000;

let arrivals = 0;
let lastArrivalAt = Number.NEGATIVE_INFINITY;
let floodStartedAt = 0;

/** Note a caller's run request (any face); returns its number for `callersArrivingSince`. */
export function noteCallerArrival(now = Date.now()): number {
  if (now - lastArrivalAt >= ARRIVAL_GAP_MS) floodStartedAt = now;
  lastArrivalAt = now;
  arrivals += 1;
  return arrivals;
}

/** How many callers have been noted (tests). */
export function callerArrivals(): number {
  return arrivals;
}

/**
 * Whether callers after caller `seq` are still arriving: one came in within
 * the last `ARRIVAL_GAP_MS`, in the first `FLOOD_HOLD_MS` of a flood. A lone
 * run never waits for its own request.
 */
export function callersArrivingSince(seq: number, now = Date.now()): boolean {
  return (
    arrivals > seq && now - lastArrivalAt < ARRIVAL_GAP_MS && now - floodStartedAt < FLOOD_HOLD_MS
  );
}
