import { readFileSync } from "node:fs";

/** What the runner reads of `/proc/<pid>/stat`. */
export interface ProcStat {
  /** The state letter: R, S, D, Z (zombie), X (dead), ... */
  state: string;
  /** Its process group. */
  pgrp: number;
  /** When it started, in clock ticks after boot (with the pid, it names one process). */
  startTime: string;
}

/** Parse the text of `/proc/<pid>/stat`, or null when it is not one. */
export function parseProcStat(text: string): ProcStat | null {
  // The command name, in parentheses, may itself hold ") ": the fields follow its last one.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const [state, , pgrp] = fields;
  const startTime = fields[19];
  if (state === undefined || pgrp === undefined || startTime === undefined) return null;
  return { state, pgrp: Number(pgrp), startTime };
}

/** `/proc/<pid>/stat` read now, or null (no such process, or no /proc). */
export function readProcStat(pid: number | string): ProcStat | null {
  try {
    return parseProcStat(readFileSync(`/proc/${pid}/stat`, "latin1"));
  } catch {
    return null;
  }
}

/** A state of a process that has exited: a zombie not yet reaped, or one being reaped. */
export function exitedState(state: string): boolean {
  return state === "Z" || state === "X";
}
