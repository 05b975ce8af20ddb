import type { ProviderEndpoint } from "../config/config.js";
import type { ProviderId } from "../config/providers.js";
import type { AgentItem, AgentPolicy, EarlierLines } from "../events/run-event.js";

/** A file the caller must write (mode 0600, parent created) before it spawns the command. */
export interface SpecFile {
  /** Absolute path, always inside `BuildCommandInput.runDir` (never inside the repo). */
  path: string;
  content: string;
}

/**
 * How to start one provider run: the exact argv and the complete environment
 * (never merged with `process.env` by the caller: spec §10 item 4).
 */
export interface CommandSpec {
  bin: string;
  /** Arguments after `bin`. The prompt is the tail, after an end-of-options marker where the CLI has one. */
  args: string[];
  /** The child's whole environment, keys sorted (see `child-env.ts`). */
  env: Record<string, string>;
  /**
   * Files the caller writes before spawning (adapters are pure, so they only
   * describe them). Used by gemini for the reasoning-effort settings file
   * (spec §6.2, §10 item 15). Absent when there is nothing to write.
   */
  files?: SpecFile[];
  /**
   * Directories the caller creates (`mkdir -p`) before spawning; a failure
   * should fail the run. Used by codex for `CODEX_HOME` (spec §7.1), which
   * must exist before codex starts.
   */
  dirs?: string[];
}

/** What an adapter needs to build one command line. */
export interface BuildCommandInput {
  /** Resolved absolute binary path (`resolve-binary.ts`). */
  bin: string;
  /** Absolute session repo; also the child's cwd. */
  repoDir: string;
  prompt: string;
  /** The policy for this run, already narrowed by `resolveRunPolicy`. */
  policy: AgentPolicy;
  /** The runner's env snapshot (`Config.hostEnv`). */
  hostEnv: Readonly<Record<string, string>>;
  /** Admin pass-through names (`FERMILINK_RUNNER_ENV_PASSTHROUGH`). */
  envPassthrough: readonly string[];
  /** The model endpoint and key configured for this provider (`FERMILINK_<P>_BASE_URL` / `_API_KEY`). */
  endpoint?: ProviderEndpoint;
  /**
   * A private directory outside the repo where `CommandSpec.files` go.
   * Defaults to the parent of `repoDir`, which is the session dir in
   * FermiLink's layout (spec §4.2: `<root>/<session>/repo`). Runs of one
   * session are serialised, so a fixed file name there cannot be raced.
   */
  runDir?: string;
  /**
   * A bubblewrap that works here (`read-only-sandbox.ts`), given to a
   * read-only run of an adapter with `readOnlyNeedsBwrap`. Absent or null:
   * none, and that run keeps the CLI's own permissions.
   */
  bwrap?: string | null;
}

/**
 * Everything the runner knows about one provider CLI. Implementations are
 * pure (no spawning, no file access): the caller resolves the binary, writes
 * `files`, creates `dirs` and spawns (style.md, "absorb" item 2).
 */
export interface ProviderAdapter {
  readonly id: ProviderId;
  /** Env var naming the binary, e.g. `FERMILINK_CODEX_BIN` (spec §6.1). */
  readonly binEnvKey: string;
  /** Binary looked up when that variable is unset, e.g. `codex`. */
  readonly defaultBinName: string;
  /** Instruction-file alias kept next to AGENTS.md (spec §4.3): CLAUDE.md, GEMINI.md or null. */
  readonly workspaceAlias: string | null;
  /** The argv and env for one headless JSON run. Pure; throws only on a programming error. */
  buildCommand(input: BuildCommandInput): CommandSpec;
  /**
   * Typed readings of one stdout line. Pure (`earlier` reads only the run's
   * lines before this one, which never change); `[]` when the line is not
   * understood; never throws.
   */
  normalize(line: string, earlier?: EarlierLines): AgentItem[];
  /**
   * The event types whose lines can be read as a `result` item, as they
   * appear in the line: a line containing none of them never holds one, so
   * the runner learns a run's outcome without reading every line (a run seen
   * only by SSE viewers, which get the raw line, reads no other).
   */
  readonly resultEventTypes: readonly string[];
  /**
   * Where the CLI may live besides `node_modules/.bin/<defaultBinName>`,
   * relative to that `.bin` directory (a package that ships only a binary
   * and links no `.bin` entry). Tried before PATH.
   */
  readonly extraBinCandidates?: readonly string[];
  /**
   * For a CLI whose own retries on a failing model endpoint cannot be bounded
   * by a setting: how it reports a failed model call on stderr, and how many
   * retries the runner allows before it ends the run (`retries_exhausted`).
   */
  readonly retryGuard?: RetryGuard;
  /**
   * The CLI's own read-only mode still lets its shell write (opencode's plan
   * agent runs bash): its read-only runs go inside bubblewrap when one works
   * (`BuildCommandInput.bwrap`).
   */
  readonly readOnlyNeedsBwrap?: boolean;
}

export interface RetryGuard {
  /** Failed calls allowed beyond the first (the other CLIs are set to 1 retry). */
  maxRetries: number;
  /** The error text when `line` (one stderr line) reports a failed model call, else null. Pure. */
  failedCall(line: string): string | null;
}
