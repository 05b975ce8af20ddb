import { type ParseArgsConfig, parseArgs } from "node:util";
import { ConfigError, loadConfig } from "../config/load-config.js";
import { doctor, formatChecks } from "./doctor.js";
import { DEFAULT_CONNECT_TIMEOUT_MS, RUN_EXIT, runCommand } from "./run-command.js";

const DEFAULT_URL = "http://127.0.0.1:8000";

const USAGE = `Usage: fermilink-runner <command> [options]

Commands:
  run "<prompt>"   stream a run from a server to the terminal
  serve            start the server (what \`npm start\` runs)
  doctor           which provider CLIs, git and bubblewrap this machine has

\`fermilink-runner <command> --help\` describes a command.
`;

const RUN_USAGE = `Usage: fermilink-runner run "<prompt>" [options]

Streams one run from a server: assistant text, commands with their output, file
changes, tool calls, usage, the provider's stderr (dimmed) and the exit line.

Options:
  --session ID      session (workspace) to run in; default: a new one
  --package ID      scientific package to overlay
  --user ID         user id for admission accounting
  --sandbox MODE    read-only, workspace-write or danger-full-access (may only narrow the policy)
  --provider NAME   must be empty or the server's configured provider
  --detach          keep the run going when this command stops (Ctrl-C)
  --json            print every event as one JSON line (the proto's JSON form)
  --url URL         the server (default $FERMILINK_RUNNER_URL or ${DEFAULT_URL})
  --token TOKEN     sent as \`Authorization: Bearer TOKEN\` on every call, for a server that
                    has FERMILINK_RUNNER_AUTH_TOKENS (default $FERMILINK_RUNNER_TOKEN)
  --connect-timeout S
                    seconds to wait for the server to answer (default ${DEFAULT_CONNECT_TIMEOUT_MS / 1000}): connecting
                    and the run's start; the stream after that may stay quiet for longer
  -h, --help        this text

Exit code: ${RUN_EXIT.succeeded} the run succeeded, ${RUN_EXIT.failed} it failed, ${RUN_EXIT.usage} bad usage,
${RUN_EXIT.unreachable} the server cannot be reached, does not answer in time or refuses the request
(its code and message are printed; no run started), ${RUN_EXIT.lost} the stream broke after the run started
and before its end (its outcome is unknown), ${RUN_EXIT.interrupted} interrupted by Ctrl-C (which ends the run unless --detach),
${RUN_EXIT.brokenPipe} the reader of the output went away (| head), ${RUN_EXIT.terminated} / ${RUN_EXIT.hangup} stopped by SIGTERM / SIGHUP
(which end the run as Ctrl-C does).
`;

const SERVE_USAGE = `Usage: fermilink-runner serve

Starts the server on the FERMILINK_* environment, exactly as \`npm start\` does,
and drains live runs on SIGTERM or SIGINT. Exit code: 0 clean stop, 1 bad
configuration, missing provider CLI, unusable run store or a port it cannot
listen on (taken: the message names FERMILINK_RUNNER_PORT or
FERMILINK_RUNNER_METRICS_PORT), 2 crash.
`;

const DOCTOR_USAGE = `Usage: fermilink-runner doctor

Checks this machine as the server would see it (same FERMILINK_* environment):
each provider CLI found the way the server finds it, with its --version; git;
bubblewrap; the default provider; FERMILINK_HOME, workspaces and run store.
Exit code: 0 when the default provider's CLI and git are usable, 1 otherwise,
2 bad configuration.
`;

const COMMAND_USAGE = { run: RUN_USAGE, serve: SERVE_USAGE, doctor: DOCTOR_USAGE } as const;

/** A usage error: the message and the relevant usage on stderr. */
function usageError(message: string, usage: string): number {
  process.stderr.write(`fermilink-runner: ${message}\n\n${usage}`);
  return RUN_EXIT.usage;
}

/** Exit code, or null when the command keeps running and ends the process itself. */
async function main(argv: string[]): Promise<number | null> {
  const [command, ...rest] = argv;
  if (command === undefined) return usageError("no command given", USAGE);
  if (command === "--help" || command === "-h" || command === "help") {
    // `help run` is what many CLIs take for `run --help`.
    const topic = command === "help" ? rest[0] : undefined;
    if (topic === undefined) {
      process.stdout.write(USAGE);
      return 0;
    }
    // Own keys only: `help toString` is an unknown command, not Object.prototype's.
    if (!Object.hasOwn(COMMAND_USAGE, topic))
      return usageError(`unknown command ${JSON.stringify(topic)}`, USAGE);
    process.stdout.write(COMMAND_USAGE[topic as keyof typeof COMMAND_USAGE]);
    return 0;
  }
  if (command === "serve") return serveCommand(rest);
  if (command === "doctor") return doctorCommand(rest);
  if (command === "run") return runCommandFromArgs(rest);
  return usageError(`unknown command ${JSON.stringify(command)}`, USAGE);
}

/** Parse `args` against `options`; a usage error is returned as a message. */
function parse<const O extends NonNullable<ParseArgsConfig["options"]>>(
  args: string[],
  options: O,
  allowPositionals: boolean,
) {
  try {
    return { ok: true as const, ...parseArgs({ args, options, allowPositionals, strict: true }) };
  } catch (err) {
    return { ok: false as const, message: err instanceof Error ? err.message : String(err) };
  }
}

const HELP_OPTION = { help: { type: "boolean", short: "h" } } as const;

async function serveCommand(args: string[]): Promise<number | null> {
  const parsed = parse(args, HELP_OPTION, false);
  if (!parsed.ok) return usageError(parsed.message, SERVE_USAGE);
  if (parsed.values.help) {
    process.stdout.write(SERVE_USAGE);
    return 0;
  }
  // Loaded for `serve` only: the server's modules are most of what a start of `run`, `doctor`
  // or `--help` would otherwise load (0.3-0.7 s of a ≈ 1 s start on a busy 2-core box).
  const { serve } = await import("./serve.js");
  await serve();
  return null;
}

async function doctorCommand(args: string[]): Promise<number> {
  const parsed = parse(args, HELP_OPTION, false);
  if (!parsed.ok) return usageError(parsed.message, DOCTOR_USAGE);
  if (parsed.values.help) {
    process.stdout.write(DOCTOR_USAGE);
    return 0;
  }
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`fermilink-runner: ${err.message}\n`);
    return 2;
  }
  const report = await doctor(config);
  process.stdout.write(formatChecks(report.checks));
  return report.defaultOk ? 0 : 1;
}

async function runCommandFromArgs(args: string[]): Promise<number> {
  const parsed = parse(
    args,
    {
      session: { type: "string" },
      package: { type: "string" },
      user: { type: "string" },
      sandbox: { type: "string" },
      provider: { type: "string" },
      url: { type: "string" },
      token: { type: "string" },
      "connect-timeout": { type: "string" },
      detach: { type: "boolean" },
      json: { type: "boolean" },
      ...HELP_OPTION,
    },
    true,
  );
  if (!parsed.ok) return usageError(parsed.message, RUN_USAGE);
  const v = parsed.values;
  if (v.help) {
    process.stdout.write(RUN_USAGE);
    return 0;
  }
  // Unquoted words are joined, so `run list the files` works like `run "list the files"`.
  const prompt = parsed.positionals.join(" ").trim();
  if (prompt === "") return usageError("run needs a prompt", RUN_USAGE);
  // A blank variable is unset, as every FERMILINK_* variable is; a bad URL is named by where it came from.
  const envUrl = process.env.FERMILINK_RUNNER_URL?.trim() || undefined;
  const url = v.url ?? envUrl ?? DEFAULT_URL;
  if (!URL.canParse(url) || !/^https?:$/.test(new URL(url).protocol)) {
    const source = v.url !== undefined ? "--url " : "FERMILINK_RUNNER_URL=";
    return usageError(`${source}${JSON.stringify(url)} is not an http(s) URL`, RUN_USAGE);
  }
  // Blank is unset, as for the URL. A bad token is named by where it came from, never shown:
  // it is a secret, and the terminal or a CI log may be read by others.
  const envToken = process.env.FERMILINK_RUNNER_TOKEN?.trim() || undefined;
  const token = v.token ?? envToken;
  if (token !== undefined && !/^[\x21-\x7e]+$/.test(token)) {
    const source = v.token !== undefined ? "--token" : "FERMILINK_RUNNER_TOKEN";
    return usageError(
      `${source} is blank or has a space, control or non-ASCII character (a token has none)`,
      RUN_USAGE,
    );
  }
  const timeout = v["connect-timeout"];
  const timeoutS = timeout === undefined ? DEFAULT_CONNECT_TIMEOUT_MS / 1000 : Number(timeout);
  // setTimeout takes up to 2^31-1 ms; a longer wait would fire at once. The bound is named: a
  // large number is a number of seconds, and "not a positive number" alone would puzzle.
  const maxS = Math.floor((2 ** 31 - 1) / 1000);
  if (timeout?.trim() === "" || !(timeoutS > 0 && timeoutS <= maxS)) {
    return usageError(
      `--connect-timeout ${JSON.stringify(timeout)} is not a positive number of seconds up to ${maxS}`,
      RUN_USAGE,
    );
  }
  return runCommand({
    prompt,
    url,
    token,
    session: v.session ?? "",
    package: v.package ?? "",
    user: v.user ?? "",
    sandbox: v.sandbox ?? "",
    provider: v.provider ?? "",
    detach: v.detach ?? false,
    json: v.json ?? false,
    connectTimeoutMs: timeoutS * 1000,
  });
}

/**
 * A reader of our output that went away (`| head -1`, `| true`) fails the next write with EPIPE,
 * which node raises as an unhandled 'error' event: a stack trace and exit 1 (for `--help`,
 * `doctor`, or `run`'s last message on stderr). The shell's code for it instead, as a program
 * killed by SIGPIPE would give. `run` also ends its call on it (run-command.ts). Not for `serve`:
 * a server goes on when its log's reader goes away.
 */
let brokenPipe = false;
const onBrokenPipe = (err: NodeJS.ErrnoException) => {
  if (err.code !== "EPIPE") throw err;
  brokenPipe = true;
  process.exitCode = RUN_EXIT.brokenPipe;
};
if (process.argv[2] !== "serve") {
  process.stdout.on("error", onBrokenPipe);
  process.stderr.on("error", onBrokenPipe);
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== null) process.exitCode = brokenPipe ? RUN_EXIT.brokenPipe : code;
  },
  (err: unknown) => {
    process.stderr.write(`fermilink-runner: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 2;
  },
);
