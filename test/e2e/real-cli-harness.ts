import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
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
  /** SSE face: every frame. */
  frames: SseEvent[];
  /** SSE face: the `runner.exit` payload. */
  exit: Record<string, unknown>;
  /** Connect face (gRPC): every event of a second, identical run. */
  events: RunEvent[];
  /** The typed items of the Connect run's agent events. */
  items: AgentItem["kind"][];
  /** Content of `made-by-agent.txt` in the session repo after the SSE run (null: absent). */
  madeFile: string | null;
  model: FakeModel;
  elapsedMs: number;
}

/**
 * One real CLI, run twice through the runner against the fake model: once on
 * FermiLink's SSE face, once over gRPC for the typed events. The runner's
 * FERMILINK_HOME is kept outside /tmp (the CLIs' homes live in it).
 */
export async function runRealCli(
  id: ProviderId,
  script: FakeModelScript,
  opts: {
    env?: Record<string, string>;
    prompt?: string;
    modelDown?: boolean;
    faces?: "both" | "sse";
  } = {},
): Promise<RealRun> {
  const model = await startFakeModel(script);
  if (opts.modelDown) await model.close();
  const home = await mkdtemp(path.join("/var/tmp", "flr-e2e-"));
  let server: TestServer | undefined;
  try {
    const upper = id.toUpperCase();
    const baseUrl = id === "codex" || id === "opencode" ? `${model.url}/v1` : model.url;
    server = await startTestServer({
      FERMILINK_HOME: home,
      FERMILINK_AGENT_PROVIDER: id,
      [`FERMILINK_${upper}_BIN`]: realCli(id),
      [`FERMILINK_${upper}_BASE_URL`]: baseUrl,
      [`FERMILINK_${upper}_API_KEY`]: "sk-fake-key",
      FERMILINK_AGENT_MODEL: "fake-model",
      FERMILINK_RUNNER_MAX_RUNTIME_SECONDS: "60",
      ...opts.env,
    });
    const prompt = opts.prompt ?? "Create made-by-agent.txt";
    const started = Date.now();
    const res = await fetch(`${server.baseUrl}/run`, {
      method: "POST",
      body: JSON.stringify({ session_id: "e2e-sse", user_prompt: prompt }),
    });
    const frames: SseEvent[] = [];
    for await (const ev of parseSse(res.body as ReadableStream<Uint8Array>)) frames.push(ev);
    const elapsedMs = Date.now() - started;
    const madeFile = await readFile(
      path.join(server.workspacesRoot, "e2e-sse", "repo", "made-by-agent.txt"),
      "utf8",
    ).catch(() => null);
    const events: RunEvent[] = [];
    if (opts.faces !== "sse") {
      const client = createClient(RunService, createGrpcTransport({ baseUrl: server.baseUrl }));
      for await (const ev of client.run({ sessionId: "e2e-grpc", userPrompt: prompt }))
        events.push(ev);
    }
    const last = frames.at(-1);
    return {
      frames,
      exit: last?.event === "runner.exit" ? (JSON.parse(last.data) as Record<string, unknown>) : {},
      events,
      items: events.flatMap((e) =>
        e.event.case === "agent" ? e.event.value.items.map((i) => i.kind) : [],
      ),
      madeFile,
      model,
      elapsedMs,
    };
  } finally {
    await server?.stop();
    if (!opts.modelDown) await model.close();
    await rm(home, { recursive: true, force: true }).catch(() => undefined);
  }
}
