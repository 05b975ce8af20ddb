import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { type AgentItem, type RunEvent, RunService } from "../../gen/fermilink/runner/v1/run_pb.js";
import type { ProviderId } from "../../src/config/providers.js";
import {
  type FakeModel,
  type FakeModelScript,
  startFakeModel,
} from "../fixtures/fake-model/fake-model.js";
import { parseSse, type SseEvent } from "../helpers/sse-client.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/**
 * The real CLI installed as a (dev) dependency. opencode comes as its Linux
 * x64 binary package (an optional dependency): the `opencode-ai` wrapper lists
 * platform packages the registry here does not carry, which breaks `npm ci`.
 */
export function realCli(id: ProviderId): string {
  if (id === "opencode")
    return path.join(ROOT, "node_modules", "opencode-linux-x64", "bin", "opencode");
  return path.join(ROOT, "node_modules", ".bin", id);
}

export const haveCli = (id: ProviderId) => existsSync(realCli(id));

/** What one run through the runner produced, on both faces. */
export interface RealRun {
  /** Connect face (gRPC): every event of the run. */
  events: RunEvent[];
  /** The typed items of its agent events. */
  items: AgentItem["kind"][];
  /** SSE face: the same run replayed in FermiLink's wire form (`GET /runs/{id}/events`). */
  frames: SseEvent[];
  /** SSE face: the `runner.exit` payload. */
  exit: Record<string, unknown>;
  /** The session repo the run worked in (removed after the run). */
  repoDir: string;
  /** Content of `made-by-agent.txt` in the session repo after the run (null: absent). */
  madeFile: string | null;
  /** Paths in the session dir outside its repo after the run, relative, at most four levels deep. */
  sessionPaths: string[];
  model: FakeModel;
  elapsedMs: number;
}

/**
 * One real CLI run through the runner against the fake model: started over
 * gRPC (typed events), then replayed over SSE from the run store, so both
 * faces are checked with one (slow) CLI execution. The runner's
 * FERMILINK_HOME is kept outside /tmp (the CLIs' homes live in it).
 */
export async function runRealCli(
  id: ProviderId,
  script: FakeModelScript | ((repoDir: string) => FakeModelScript),
  opts: {
    env?: Record<string, string>;
    prompt?: string;
    modelDown?: boolean;
    /** Called with the fake model once it listens, before the runner starts. */
    onModel?: (model: FakeModel) => void;
  } = {},
): Promise<RealRun> {
  const home = await mkdtemp(path.join("/var/tmp", "flr-e2e-"));
  // The session repo the runner will create (FERMILINK_HOME/workspaces/<session>/repo).
  const repoDir = path.join(home, "workspaces", "e2e", "repo");
  const model = await startFakeModel(typeof script === "function" ? script(repoDir) : script);
  if (opts.modelDown) await model.close();
  opts.onModel?.(model);
  let server: TestServer | undefined;
  try {
    const upper = id.toUpperCase();
    const baseUrl = id === "codex" || id === "opencode" ? `${model.url}/v1` : model.url;
    server = await startTestServer({
      FERMILINK_HOME: home,
      // The CLIs' shells (Claude's Bash tool runs a login shell) must not read this machine's
      // dotfiles: a ~/.bashrc running `pyenv init` made every such shell wait on pyenv's lock.
      HOME: home,
      FERMILINK_AGENT_PROVIDER: id,
      // opencode is found without FERMILINK_OPENCODE_BIN, as on a clean clone (its platform package).
      ...(id === "opencode" ? {} : { [`FERMILINK_${upper}_BIN`]: realCli(id) }),
      [`FERMILINK_${upper}_BASE_URL`]: baseUrl,
      [`FERMILINK_${upper}_API_KEY`]: "sk-fake-key",
      FERMILINK_AGENT_MODEL: "fake-model",
      FERMILINK_RUNNER_MAX_RUNTIME_SECONDS: "60",
      ...opts.env,
    });
    const started = Date.now();
    const client = createClient(RunService, createGrpcTransport({ baseUrl: server.baseUrl }));
    const events: RunEvent[] = [];
    const request = { sessionId: "e2e", userPrompt: opts.prompt ?? "Create made-by-agent.txt" };
    for await (const ev of client.run(request)) events.push(ev);
    const elapsedMs = Date.now() - started;
    const madeFile = await readFile(
      path.join(server.workspacesRoot, "e2e", "repo", "made-by-agent.txt"),
      "utf8",
    ).catch(() => null);
    const sessionPaths = await listTree(path.dirname(repoDir), 4, (rel) => rel !== "repo");
    const res = await fetch(`${server.baseUrl}/runs/${events[0]?.runId}/events`);
    const frames: SseEvent[] = [];
    for await (const ev of parseSse(res.body as ReadableStream<Uint8Array>)) frames.push(ev);
    const last = frames.at(-1);
    return {
      events,
      items: events.flatMap((e) =>
        e.event.case === "agent" ? e.event.value.items.map((i) => i.kind) : [],
      ),
      frames,
      exit: last?.event === "runner.exit" ? (JSON.parse(last.data) as Record<string, unknown>) : {},
      madeFile,
      sessionPaths,
      repoDir,
      model,
      elapsedMs,
    };
  } finally {
    await server?.stop();
    if (!opts.modelDown) await model.close();
    await rm(home, { recursive: true, force: true }).catch(() => undefined);
  }
}

/** Relative paths under `dir`, `depth` levels deep, skipping the top-level entries `keep` refuses. */
async function listTree(
  dir: string,
  depth: number,
  keep: (rel: string) => boolean,
): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string, left: number): Promise<void> => {
    const entries = await readdir(path.join(dir, rel), { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      const child = rel === "" ? e.name : `${rel}/${e.name}`;
      if (rel === "" && !keep(child)) continue;
      out.push(child);
      if (e.isDirectory() && left > 1) await walk(child, left - 1);
    }
  };
  await walk("", depth);
  return out.sort();
}
