/** Messages between the runner and its spawn helper (`spawner-child.mjs`), over node IPC. */

export interface SpawnRequest {
  type: "spawn";
  id: number;
  bin: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
  niceness: number;
}

export type SpawnerMessage =
  /** Sent twice per child, each with one of its pipes as the IPC handle. */
  | { type: "spawned"; id: number; pid: number; stream: "stdout" | "stderr" }
  | {
      type: "error";
      id: number;
      code: string;
      message: string;
      /** Set when the exec wrapper (perl), not the CLI, could not be executed: its path. */
      wrapper?: string;
    }
  | { type: "exit"; id: number; code: number | null; signal: NodeJS.Signals | null };
