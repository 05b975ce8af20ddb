import { parseArgs } from "node:util";
import { ConfigError, loadConfig } from "../config/load-config.js";
import { doctor } from "./doctor.js";
import { runCommand } from "./run-command.js";
import { serve } from "./serve.js";

const USAGE = `Usage:
  fermilink-runner run "<prompt>" [--session ID] [--package ID] [--user ID]
                       [--sandbox MODE] [--provider NAME] [--detach] [--json] [--url URL]
  fermilink-runner serve      start the server (what \`npm start\` runs)
  fermilink-runner doctor     which provider CLIs, git and bubblewrap this machine has

run: streams a run from a server (default $FERMILINK_RUNNER_URL or http://127.0.0.1:8000).
  Exit code 0 when the run completed with return code 0, 1 when it failed, 2 for bad usage,
  3 when the server cannot be reached or refuses the request, 130 on Ctrl-C.
  --json prints every event as one JSON line (the proto's JSON form).
`;

function usageError(message: string): number {
  process.stderr.write(`fermilink-runner: ${message}\n\n${USAGE}`);
  return 2;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === "--help" || command === "-h" || command === "help") {
    process.stdout.write(USAGE);
    return command === undefined ? 2 : 0;
  }
  if (command === "serve") {
    await serve();
    return -1; // keeps running; the server exits the process itself
  }
  if (command === "doctor") {
    let config: ReturnType<typeof loadConfig>;
    try {
      config = loadConfig();
    } catch (err) {
      if (err instanceof ConfigError) return usageError(err.message);
      throw err;
    }
    const { checks, defaultOk } = await doctor(config);
    for (const c of checks)
      process.stdout.write(`${c.ok ? "ok  " : "--  "} ${c.name.padEnd(16)} ${c.detail}\n`);
    return defaultOk ? 0 : 1;
  }
  if (command !== "run") return usageError(`unknown command ${JSON.stringify(command)}`);
  let parsed: ReturnType<typeof parseRun>;
  try {
    parsed = parseRun(rest);
  } catch (err) {
    return usageError((err as Error).message);
  }
  if (parsed.values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const prompt = parsed.positionals.join(" ").trim();
  if (prompt === "") return usageError("run needs a prompt");
  const v = parsed.values;
  return runCommand({
    prompt,
    url: v.url ?? process.env.FERMILINK_RUNNER_URL ?? "http://127.0.0.1:8000",
    session: v.session ?? "",
    package: v.package ?? "",
    user: v.user ?? "",
    sandbox: v.sandbox ?? "",
    provider: v.provider ?? "",
    detach: v.detach ?? false,
    json: v.json ?? false,
  });
}

function parseRun(args: string[]) {
  return parseArgs({
    args,
    allowPositionals: true,
    strict: true,
    options: {
      session: { type: "string" },
      package: { type: "string" },
      user: { type: "string" },
      sandbox: { type: "string" },
      provider: { type: "string" },
      url: { type: "string" },
      detach: { type: "boolean" },
      json: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`fermilink-runner: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 2;
  },
);
