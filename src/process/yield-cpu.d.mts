/** Lower the priority of process `pid` and of its own scheduler autogroup to `niceness`. Never throws. */
export function yieldCpu(pid: number, niceness: number): void;
