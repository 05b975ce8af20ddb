/** Lower the priority of process `pid` and of its own scheduler autogroup to `niceness`. Never throws. */
export function yieldCpu(pid: number, niceness: number): void;
/** The autogroup nice value for each of `live` providers started with `base` (see yield-cpu.mjs). */
export function crowdNice(base: number, live: number): number;
/** Set the nice value of `pid`'s scheduler autogroup. Never throws. */
export function setGroupNice(pid: number, niceness: number): void;
