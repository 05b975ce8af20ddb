/**
 * spawn() forks the runner, which blocks its event loop for tens of
 * milliseconds with a big heap. Under a burst of new runs, spawning them
 * back to back would hold every other caller's first bytes (and ops answers)
 * behind all the forks. Spawns therefore take turns: one per event-loop
 * iteration, so all I/O that became ready in between is served first.
 */
let lastTurn: Promise<void> = Promise.resolve();

/** Resolves when it is this caller's turn to spawn. */
export function nextSpawnTurn(): Promise<void> {
  const turn = lastTurn.then(() => new Promise<void>((resolve) => setImmediate(resolve)));
  lastTurn = turn;
  return turn;
}
