import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "../helpers/start-server.js";

const run = promisify(execFile);
const PYTHON = "/usr/bin/python3";
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const CLIENT = path.join(ROOT, "test/fixtures/python/grpc_run_client.py");

/** Debian's python3-grpcio and python3-protobuf (installed by .ci/run). */
async function pythonHasGrpc(): Promise<boolean> {
  if (!existsSync(PYTHON)) return false;
  return run(PYTHON, ["-c", "import grpc, google.protobuf"]).then(
    () => true,
    () => false,
  );
}
// In CI the modules are installed by .ci/run: missing them there is a failure, not a skip.
const available = process.env.CI ? true : await pythonHasGrpc();
if (!available) {
  console.warn(
    `Skipping the Python gRPC test: ${PYTHON} cannot import grpc and google.protobuf ` +
      "(apt-get install python3-grpcio python3-protobuf; with CI set it fails instead).",
  );
}

let dir: string;
let descriptors: string;
let server: TestServer | undefined;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "flr-py-"));
  descriptors = path.join(dir, "runner.binpb");
  await run("npx", ["buf", "build", "--as-file-descriptor-set", "-o", descriptors], { cwd: ROOT });
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

async function pythonClient(
  request: unknown,
  /** The path called; RunService/Run by default. */
  method?: string,
): Promise<{ code: number; lines: Record<string, unknown>[] }> {
  if (!server) throw new Error("no server");
  const target = server.baseUrl.replace("http://", "");
  const args = [CLIENT, target, descriptors, JSON.stringify(request), ...(method ? [method] : [])];
  // Under vitest's 30 s test timeout, so a hung call is killed rather than orphaned.
  const out = await run(PYTHON, args, {
    timeout: 20_000,
  }).then(
    (r) => ({ code: 0, stdout: r.stdout }),
    (e: { code?: number; stdout?: string }) => ({ code: e.code ?? -1, stdout: e.stdout ?? "" }),
  );
  const lines = out.stdout
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  return { code: out.code, lines };
}

describe.skipIf(!available)("a Python gRPC client (Debian python3-grpcio)", () => {
  it("streams a full run: meta first, agent lines, exit last, seq without gaps", async () => {
    server = await startTestServer();
    const { code, lines } = await pythonClient({
      sessionId: "py1",
      userPrompt: "hello from python",
      userId: "py",
    });
    expect(code).toBe(0);
    expect(lines[0]).toHaveProperty("meta");
    expect((lines[0]?.meta as { sessionId: string } | undefined)?.sessionId).toBe("py1");
    const agents = lines
      .filter((l) => "agent" in l)
      .map((l) => l.agent as { raw: string; items?: unknown[] });
    expect(agents.length).toBeGreaterThan(0);
    expect(agents.every((a) => typeof a.raw === "string" && JSON.parse(a.raw) !== null)).toBe(true);
    expect(JSON.stringify(agents)).toContain("hello from python");
    const exit = lines.at(-1)?.exit as { reason: string; returnCode: number };
    expect(exit.reason).toBe("EXIT_REASON_COMPLETED");
    expect(exit.returnCode).toBe(0);
    expect(lines.map((l) => Number(l.seq))).toEqual(lines.map((_, i) => i + 1));
    expect(new Set(lines.map((l) => l.runId)).size).toBe(1);
  });

  it("sees the same status codes as every other client", async () => {
    server = await startTestServer();
    const empty = await pythonClient({ userPrompt: "" });
    expect(empty.code).toBe(3);
    expect(empty.lines[0]).toMatchObject({ error: "INVALID_ARGUMENT" });
    const pkg = await pythonClient({ userPrompt: "x", packageId: "no-such-package" });
    expect(pkg.lines[0]).toMatchObject({
      error: "NOT_FOUND",
      details: "Requested package not found: no-such-package",
    });
  });

  it("gets unimplemented, with the server's words, for a method or service it does not serve", async () => {
    server = await startTestServer();
    // An HTTP 404 reached grpcio as "Received http2 header with status: 404".
    const method = await pythonClient({ userPrompt: "x" }, "/fermilink.runner.v1.RunService/Nope");
    expect(method.lines[0]).toEqual({
      error: "UNIMPLEMENTED",
      details: "unknown method Nope for service fermilink.runner.v1.RunService",
    });
    const service = await pythonClient({ userPrompt: "x" }, "/no.such.v1.Service/Run");
    expect(service.lines[0]).toEqual({
      error: "UNIMPLEMENTED",
      details: "unknown service no.such.v1.Service",
    });
  });
});
