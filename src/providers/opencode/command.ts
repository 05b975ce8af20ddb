/**
 * opencode headless command (spec §6.2, real-clis.md §3): `run --dir <repo>
 * --format json`. Only read-only (`--agent plan`) and bypass
 * (`--dangerously-skip-permissions`) get a flag; workspace-write uses the
 * permissions of opencode's config, as in FermiLink. The plan agent still
 * runs bash, so a read-only run also goes inside bubblewrap when the caller
 * found one (`read-only-sandbox.ts`).
 */
import path from "node:path";
import { SESSION_TMP_DIRNAME } from "../../workspace/session-path.js";
import { type ProviderEnvVars, pickChildEnv, sortEnv } from "../child-env.js";
import { END_OF_OPTIONS, enforcedMode, policyEffort, policyModel } from "../command-parts.js";
import type { BuildCommandInput, CommandSpec, SpecFile } from "../provider-adapter.js";
import { bindPaths, bwrapArgs } from "../read-only-sandbox.js";

/** opencode reads `OPENCODE_*`; model keys live in its own config (real-clis.md §3). */
export const OPENCODE_ENV_VARS: ProviderEnvVars = Object.freeze({
  prefixes: Object.freeze(["OPENCODE_"]),
  names: Object.freeze([]),
});

/**
 * The prompt's argv tail. opencode's `run [message..]` handler joins
 * `[...message, ...argv["--"]]` with spaces, after wrapping every element that
 * contains a space in double quotes (backslash-escaping inner quotes). A
 * single-element prompt would therefore reach the model as `"…"` with `\"`
 * inside; instead the prompt is split on " " so that the join rebuilds it
 * byte for byte (no element holds a space, so none is quoted).
 *
 * No `--` in that case, on purpose: yargs coerces arguments after `--` that
 * look like numbers (`42` → 42, `1.` → 1), which both alters them and makes
 * opencode's handler throw (`arg.includes` of a number). Positionals of the
 * string-typed `message` are not coerced. An element that starts with `-`
 * would be read as a flag, though, so when any element does, the prompt goes
 * as ONE element after `--`: never a flag, at the price of opencode's quoting
 * (and a prompt that is only a negative number, like `-5`, still becomes a
 * number and fails loudly). Checked against yargs 17 with populate-- on.
 */
export function opencodePromptArgs(prompt: string): string[] {
  const pieces = prompt.split(" ");
  return pieces.some((p) => p.startsWith("-")) ? [END_OF_OPTIONS, prompt] : pieces;
}

/** Headless defaults (real-clis.md §3, §6): no auto-update, model catalog fetch, LSP download or default plugins. */
export const OPENCODE_ENV_DEFAULTS: Readonly<Record<string, string>> = {
  OPENCODE_DISABLE_AUTOUPDATE: "1",
  OPENCODE_DISABLE_MODELS_FETCH: "1",
  OPENCODE_DISABLE_LSP_DOWNLOAD: "1",
  OPENCODE_DISABLE_DEFAULT_PLUGINS: "1",
};

const STREAM_IDLE_TIMEOUT_MS = 30_000;

/**
 * Files in opencode's config dir of the session home that keep opencode from
 * installing `@opencode-ai/plugin` there. It does so in the background on
 * every new home (~95 MB fetched from registry.npmjs.org and unpacked: about
 * half of its CPU in a short run), for plugins that dir never holds: the
 * runner owns it. Two layers:
 * - a lock naming the package and a `node_modules/` (npm's hidden lockfile of
 *   an empty tree): opencode 1.18 installs only when `node_modules` is missing
 *   or the lock lacks a package it wants, so it does not try, and says nothing;
 * - `.npmrc` with `offline`: should a later opencode try anyway, the install
 *   fails at once (one warning on stderr) instead of downloading. npm reads a
 *   project `.npmrc` only for installs into that dir: the agent's own
 *   `npm install` and a repo's `.opencode/` are untouched, and npm plugins
 *   named in opencode's config go to its cache dir, not here.
 */
const PLUGIN_PACKAGE = "@opencode-ai/plugin";
const NO_PLUGIN_INSTALL: readonly { name: string; content: string }[] = [
  { name: ".npmrc", content: "offline=true\n" },
  {
    name: "package-lock.json",
    content: `${JSON.stringify({ lockfileVersion: 3, requires: true, packages: { "": { dependencies: { [PLUGIN_PACKAGE]: "*" } } } })}\n`,
  },
  {
    name: "node_modules/.package-lock.json",
    content: `${JSON.stringify({ lockfileVersion: 3, requires: true, packages: {} })}\n`,
  },
];

/** The provider the runner defines when FERMILINK_OPENCODE_BASE_URL is set. */
const PROVIDER_NAME = "fermilink";

/**
 * opencode config for an OpenAI-compatible endpoint (its bundled
 * `@ai-sdk/openai-compatible`, nothing installed at run time). Permissions are
 * answered up front: a headless run cannot answer an `ask`. opencode appends
 * the config's rules after an agent's own and the last matching rule wins, so
 * `edit: allow` would undo the plan agent's edit ban: read-only denies it.
 */
function endpointConfig(
  baseURL: string,
  apiKey: string | null,
  model: string | null,
  readOnly: boolean,
): unknown {
  const id = model ?? "default";
  return {
    model: `${PROVIDER_NAME}/${id}`,
    small_model: `${PROVIDER_NAME}/${id}`,
    autoupdate: false,
    share: "disabled",
    permission: { edit: readOnly ? "deny" : "allow", bash: "allow", webfetch: "deny" },
    provider: {
      [PROVIDER_NAME]: {
        npm: "@ai-sdk/openai-compatible",
        name: "FermiLink endpoint",
        // A stream silent for 30 s fails the call (as codex and claude are set), instead of 300 s.
        options: {
          baseURL,
          ...(apiKey ? { apiKey } : {}),
          chunkTimeout: STREAM_IDLE_TIMEOUT_MS,
          headerTimeout: STREAM_IDLE_TIMEOUT_MS,
        },
        models: { [id]: { name: id, tool_call: true, limit: { context: 128000, output: 8192 } } },
      },
    },
  };
}

const VARIANT_FOR_EFFORT: Readonly<Record<string, string>> = { xhigh: "max" };

/**
 * `opencode run --dir <repo> [--agent plan | --dangerously-skip-permissions]
 * [--model m] [--variant v] --format json <prompt pieces>`.
 *
 * `--format json` comes last, unlike spec §6.2, because yargs lets a boolean
 * flag swallow a following `true`/`false`: `--dangerously-skip-permissions
 * false do it` would turn the flag off and eat the word. Only a string-valued
 * option may stand right before the prompt.
 */
export function buildOpencodeCommand(input: BuildCommandInput): CommandSpec {
  const { policy } = input;
  const args = ["run", "--dir", input.repoDir];
  const readOnly = policy.sandboxPolicy !== "bypass" && enforcedMode(policy) === "read-only";
  if (policy.sandboxPolicy === "bypass") args.push("--dangerously-skip-permissions");
  else if (readOnly) args.push("--agent", "plan");
  const model = policyModel(policy);
  const endpoint = input.endpoint;
  // With a configured endpoint the runner defines the provider, so the model is addressed in it.
  const modelRef = endpoint?.baseUrl ? `${PROVIDER_NAME}/${model ?? "default"}` : model;
  if (modelRef !== null) args.push("--model", modelRef);
  const effort = policyEffort(policy);
  if (effort !== null) args.push("--variant", VARIANT_FOR_EFFORT[effort] ?? effort);
  // Warnings and errors only on stderr (nothing on a clean run): the failed model calls the
  // runner counts to bound opencode's own retries (retry-guard.ts).
  args.push("--print-logs", "--log-level", "WARN");
  args.push("--format", "json", ...opencodePromptArgs(input.prompt));

  const env = pickChildEnv(input.hostEnv, OPENCODE_ENV_VARS, input.envPassthrough);
  for (const [name, value] of Object.entries(OPENCODE_ENV_DEFAULTS)) env[name] ??= value;
  if (endpoint?.baseUrl && env.OPENCODE_CONFIG_CONTENT === undefined) {
    env.OPENCODE_CONFIG_CONTENT = JSON.stringify(
      endpointConfig(endpoint.baseUrl, endpoint.apiKey, model, readOnly),
    );
  }
  const bwrap = readOnly ? (input.bwrap ?? null) : null;
  // Sandboxed, opencode needs a home of its own to write to, so the documented default applies.
  const runDir = input.runDir ?? (bwrap !== null ? path.dirname(input.repoDir) : undefined);
  const dirs: string[] = [];
  const files: SpecFile[] = [];
  if (runDir) {
    // A per-session home: opencode keeps its data, cache, snapshots and plugins under XDG dirs.
    const home = path.join(runDir, ".opencode-home");
    Object.assign(env, {
      HOME: home,
      XDG_CONFIG_HOME: path.join(home, ".config"),
      XDG_DATA_HOME: path.join(home, ".local", "share"),
      XDG_CACHE_HOME: path.join(home, ".cache"),
      XDG_STATE_HOME: path.join(home, ".local", "state"),
    });
    dirs.push(home);
    const configDir = path.join(home, ".config", "opencode");
    for (const f of NO_PLUGIN_INSTALL)
      files.push({ path: path.join(configDir, f.name), content: f.content });
  }
  if (bwrap !== null && runDir) {
    // The session's temp dir even when the host sets TMPDIR: only these two dirs are writable,
    // and a shared host temp dir would let the agent write outside its session.
    const tmp = path.join(runDir, SESSION_TMP_DIRNAME);
    env.TMPDIR = tmp;
    dirs.push(tmp);
    // bwrap is what gets exec'd; opencode's binary was resolved (and checked) by the caller.
    return {
      bin: bwrap,
      args: [...bwrapArgs(bindPaths(dirs, runDir)), input.bin, ...args],
      env: sortEnv(env),
      dirs,
      files,
    };
  }
  const spec: CommandSpec = { bin: input.bin, args, env: sortEnv(env) };
  if (dirs.length > 0) spec.dirs = dirs;
  if (files.length > 0) spec.files = files;
  return spec;
}
