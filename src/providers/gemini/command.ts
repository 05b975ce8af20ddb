/**
 * Gemini CLI headless command (spec §6.2, real-clis.md §3).
 *
 * No `--sandbox`: FermiLink passes it under enforce, but Gemini's sandbox runs
 * the tools in a docker/podman container, and there is no container runtime
 * where this runner is deployed (real-clis.md §3, §7), so every run would fail.
 * The approval mode is the only guard: read-only → `plan`, workspace-write →
 * `auto_edit`, bypass → `yolo`; any other enforced mode gets Gemini's default.
 */
import path from "node:path";
import { type ProviderEnvVars, pickChildEnv, sortEnv } from "../child-env.js";
import { enforcedMode, policyEffort, policyModel } from "../command-parts.js";
import type { BuildCommandInput, CommandSpec, SpecFile } from "../provider-adapter.js";
import type { ReasoningEffort } from "../runtime-policy.js";

/** Gemini reads `GEMINI_*` plus a few `GOOGLE_*` names (not all of `GOOGLE_*`: other Google tools' secrets). */
export const GEMINI_ENV_VARS: ProviderEnvVars = Object.freeze({
  prefixes: Object.freeze(["GEMINI_"]),
  names: Object.freeze([
    "GOOGLE_API_KEY",
    "GOOGLE_GEMINI_BASE_URL",
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_APPLICATION_CREDENTIALS",
  ]),
});

/** The settings file carrying the reasoning effort, written by the caller into `runDir`. */
export const GEMINI_SETTINGS_FILE_NAME = ".gemini-system-settings.json";

/** The env var Gemini reads its system settings path from (FermiLink `prepare_runtime_env`). */
export const GEMINI_SETTINGS_ENV = "GEMINI_CLI_SYSTEM_SETTINGS_PATH";

/**
 * User settings for a headless run (real-clis.md §3, §5, §6): API-key auth
 * (without it a custom base URL makes gemini pick an auth type it then
 * rejects, exit 41), no folder-trust prompt, no usage statistics, telemetry
 * or auto-update, and one attempt per request so a failing endpoint ends the
 * run in seconds instead of minutes.
 */
export const GEMINI_HEADLESS_SETTINGS = {
  security: { auth: { selectedType: "gemini-api-key" }, folderTrust: { enabled: false } },
  privacy: { usageStatisticsEnabled: false },
  telemetry: { enabled: false },
  general: {
    enableAutoUpdate: false,
    enableAutoUpdateNotification: false,
    maxAttempts: 1,
    retryFetchErrors: false,
  },
};

/**
 * A user-tier policy (read from `$HOME/.gemini/policies/`) for every enforced
 * run. Headless, Gemini allows `enter_plan_mode` and `exit_plan_mode` by
 * itself, and leaving plan mode switches a non-interactive run to YOLO
 * (gemini-cli 0.61, `ExitPlanModeTool.getAllowApprovalMode`): a read-only
 * (`plan`) or workspace-write (`auto_edit`) run could widen itself to yolo.
 * User-tier rules outrank the built-in ones whatever their priority.
 */
export const GEMINI_ENFORCE_POLICY = `# Written by fermilink-runner for enforced runs: the approval mode may not change.
[[rule]]
toolName = ["enter_plan_mode", "exit_plan_mode"]
decision = "deny"
priority = 999
denyMessage = "This run's approval mode is fixed by the runner and cannot be changed."
`;

/** Gemini's default model name when the policy names none (FermiLink's `_GEMINI_DEFAULT_MODEL`). */
const DEFAULT_MODEL = "auto-gemini-3";

const THINKING_LEVEL: Readonly<Record<ReasoningEffort, string>> = {
  low: "LOW",
  medium: "MEDIUM",
  high: "HIGH",
  xhigh: "HIGH",
};
const THINKING_BUDGET: Readonly<Record<ReasoningEffort, number>> = {
  low: 1024,
  medium: 4096,
  high: 8192,
  xhigh: 16384,
};

/**
 * The settings payload FermiLink writes for an effort: gemini-3 models take a
 * `thinkingLevel`, older ones a `thinkingBudget` in tokens (spec §6.2).
 */
export function geminiEffortSettings(model: string | null, effort: ReasoningEffort): unknown {
  const target = model ?? DEFAULT_MODEL;
  const lower = target.toLowerCase();
  const thinkingLevelModel = lower.startsWith("gemini-3") || lower.startsWith("auto-gemini-3");
  const thinkingConfig = thinkingLevelModel
    ? { includeThoughts: true, thinkingLevel: THINKING_LEVEL[effort] }
    : { includeThoughts: true, thinkingBudget: THINKING_BUDGET[effort] };
  return {
    modelConfigs: {
      customOverrides: [
        { match: { model: target }, modelConfig: { generateContentConfig: { thinkingConfig } } },
      ],
    },
  };
}

function approvalMode(input: BuildCommandInput): string | null {
  if (input.policy.sandboxPolicy === "bypass") return "yolo";
  const mode = enforcedMode(input.policy);
  if (mode === "read-only") return "plan";
  if (mode === "workspace-write") return "auto_edit";
  return null;
}

/**
 * `gemini --include-directories <repo> --output-format stream-json
 * [--approval-mode m] [--model m] --prompt=<prompt>`.
 *
 * The reasoning effort has no flag. FermiLink's runner dropped it (spec §10
 * item 15); here it travels as a settings file the caller writes (`files`)
 * and `GEMINI_CLI_SYSTEM_SETTINGS_PATH` pointing at it. System settings take
 * precedence over user and workspace ones, so the effort wins; a host value
 * of that variable is replaced for such runs.
 */
export function buildGeminiCommand(input: BuildCommandInput): CommandSpec {
  const args = ["--include-directories", input.repoDir, "--output-format", "stream-json"];
  const approval = approvalMode(input);
  if (approval !== null) args.push("--approval-mode", approval);
  const model = policyModel(input.policy);
  if (model !== null) args.push("--model", model);
  // One token `--prompt=<text>`: yargs takes everything after the first `=` as the value,
  // so a prompt starting with `-` (or holding newlines) can never be read as a flag.
  args.push(`--prompt=${input.prompt}`);

  const env = pickChildEnv(input.hostEnv, GEMINI_ENV_VARS, input.envPassthrough);
  const { endpoint } = input;
  if (endpoint?.baseUrl) env.GOOGLE_GEMINI_BASE_URL = endpoint.baseUrl;
  if (endpoint?.apiKey) env.GEMINI_API_KEY = endpoint.apiKey;
  // One process, not a relaunch with a bigger heap (real-clis.md §3).
  env.GEMINI_CLI_NO_RELAUNCH ??= "true";
  const spec: CommandSpec = { bin: input.bin, args, env: sortEnv(env) };
  const files: SpecFile[] = [];
  if (input.runDir) {
    // A per-session home: gemini reads $HOME/.gemini/settings.json and keeps its temp files there.
    const home = path.join(input.runDir, ".gemini-home");
    env.HOME = home;
    files.push({
      path: path.join(home, ".gemini", "settings.json"),
      content: `${JSON.stringify(GEMINI_HEADLESS_SETTINGS, null, 2)}\n`,
    });
    if (input.policy.sandboxPolicy !== "bypass") {
      const policyFile = path.join(home, ".gemini", "policies", "fermilink-enforce.toml");
      files.push({ path: policyFile, content: GEMINI_ENFORCE_POLICY });
    }
    spec.env = sortEnv(env);
  }
  const effort = policyEffort(input.policy);
  if (effort !== null) {
    const dir = input.runDir ?? path.dirname(input.repoDir);
    const settingsPath = path.join(dir, GEMINI_SETTINGS_FILE_NAME);
    const content = `${JSON.stringify(geminiEffortSettings(model, effort), null, 2)}\n`;
    files.push({ path: settingsPath, content });
    spec.env = sortEnv({ ...env, [GEMINI_SETTINGS_ENV]: settingsPath });
  }
  if (files.length > 0) spec.files = files;
  return spec;
}
