/** Lower the priority of process `pid` and of its own scheduler autogroup to `niceness`. Never throws. */
export function yieldCpu(pid: number, niceness: number): void;
/** Set the nice value of process `pid`. Never throws. */
export function setProcessNice(pid: number, niceness: number): void;
/** Set the nice value of `pid`'s scheduler autogroup. Never throws. */
export function setGroupNice(pid: number, niceness: number): void;
