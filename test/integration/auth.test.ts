import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import { PackageService } from "../../gen/fermilink/runner/v1/packages_pb.js";
import { RunRequestSchema, RunService } from "../../gen/fermilink/runner/v1/run_pb.js";
import { ServerReflection } from "../../gen/grpc/reflection/v1/reflection_pb.js";
import { pruneSessionOwners, READ_GRACE_MS, startRetention } from "../../src/journal/retention.js";
import type { SqliteRunStore } from "../../src/journal/sqlite-run-store.js";
import { collect } from "../helpers/collect.js";
import { envelope } from "../helpers/envelope.js";
import { h2Upload } from "../helpers/h2-upload.js";
import { parseSse } from "../helpers/sse-client.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";

const SVC = "svc-token-0123456789abcdef";
const ALICE = "alice-token-0123456789abcdef";
const BOB = "bob-token-0123456789abcdef";
const AUTH_ENV = {
  FERMILINK_RUNNER_AUTH_TOKENS: `service:${SVC},user:Alice:${ALICE},user:bob:${BOB}`,
};

const servers: TestServer[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.stop();
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function server(env: Record<string, string> = AUTH_ENV): Promise<TestServer> {
  const s = await startTestServer(env);
  servers.push(s);
  return s;
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

const BIN = path.resolve(import.meta.dirname, "../../bin/fermilink-runner.mjs");

/** `fermilink-runner run …` as a user types it: its exit code, stdout and stderr. */
function cliRun(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, "run", ...args],
      { env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...env } },
      (error, out, err) => resolve({ code: error ? Number(error.code) : 0, out, err }),
    );
  });
}

/** The run ids of a `/runs` listing. */
async function runIds(res: Response): Promise<string[]> {
  const body = (await res.json()) as { runs: { run_id: string }[] };
  return body.runs.map((r) => r.run_id);
}

/** POST /run; the status, the body when not a stream, and the events' names when it is. */
async function sseRun(
  baseUrl: string,
  body: Record<string, unknown>,
  headers: Record<string, string> = {},
): Promise<{ status: number; text: string; events: string[]; meta: Record<string, unknown> }> {
  const res = await fetch(`${baseUrl}/run`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  if (!(res.headers.get("content-type") ?? "").startsWith("text/event-stream") || !res.body) {
    return { status: res.status, text: await res.text(), events: [], meta: {} };
  }
  const events: string[] = [];
  let meta: Record<string, unknown> = {};
  for await (const ev of parseSse(res.body)) {
    events.push(ev.event);
    if (ev.event === "meta") meta = JSON.parse(ev.data);
  }
  return { status: res.status, text: "", events, meta };
}

describe("auth on the SSE and HTTP routes", () => {
  it("POST /run: 401 without or with an unknown token, 403 naming another user, 200 otherwise", async () => {
    const s = await server();
    const prompt = { user_prompt: "hi" };
    const none = await sseRun(s.baseUrl, prompt);
    expect(none.status).toBe(401);
    expect(JSON.parse(none.text)).toMatchObject({ code: "UNAUTHENTICATED" });
    expect(JSON.parse(none.text).detail).toMatch(/send Authorization: Bearer <token>/);
    const blank = await sseRun(s.baseUrl, prompt, { authorization: "Bearer   " });
    expect(blank.status).toBe(401);
    const basic = await sseRun(s.baseUrl, prompt, { authorization: `Basic ${ALICE}` });
    expect(basic.status).toBe(401);
    const wrong = await sseRun(s.baseUrl, prompt, bearer(`${ALICE}x`));
    expect(wrong.status).toBe(401);
    expect(wrong.text).toBe(none.text);
    const other = await sseRun(s.baseUrl, { ...prompt, user_id: "bob" }, bearer(ALICE));
    expect(other.status).toBe(403);
    expect(JSON.parse(other.text)).toMatchObject({ code: "PERMISSION_DENIED" });
    const own = await sseRun(s.baseUrl, prompt, bearer(ALICE));
    expect(own.status).toBe(200);
    expect(own.events.at(-1)).toBe("runner.exit");
    // The token's user is the caller's: the run is listed under it.
    const listed = await fetch(`${s.baseUrl}/runs?user_id=alice`, { headers: bearer(SVC) });
    expect(await runIds(listed)).toEqual([own.meta.run_id]);
    const sameUser = await sseRun(s.baseUrl, { ...prompt, user_id: " ALICE " }, bearer(ALICE));
    expect(sameUser.status).toBe(200);
    const asBob = await sseRun(s.baseUrl, { ...prompt, user_id: "bob" }, bearer(SVC));
    expect(asBob.status).toBe(200);
    const bobs = await fetch(`${s.baseUrl}/runs/${asBob.meta.run_id}`, { headers: bearer(BOB) });
    expect(bobs.status).toBe(200);
    expect(s.app.pipeline.liveRuns).toBe(0);
  });

  it("/runs and /packages need a token; a user token sees only its own runs", async () => {
    const s = await server();
    const own = await sseRun(s.baseUrl, { user_prompt: "hi" }, bearer(ALICE));
    const runId = own.meta.run_id as string;
    for (const p of ["/runs", `/runs/${runId}`, `/runs/${runId}/events`, "/packages"]) {
      expect((await fetch(`${s.baseUrl}${p}`)).status, p).toBe(401);
      expect((await fetch(`${s.baseUrl}${p}`, { headers: bearer("nope") })).status, p).toBe(401);
    }
    const cancel = await fetch(`${s.baseUrl}/runs/${runId}/cancel`, { method: "POST" });
    expect(cancel.status).toBe(401);
    expect(cancel.headers.get("www-authenticate")).toBe("Bearer");
    expect((await fetch(`${s.baseUrl}/packages`, { headers: bearer(BOB) })).status).toBe(200);

    const list = await fetch(`${s.baseUrl}/runs`, { headers: bearer(ALICE) });
    expect(list.status).toBe(200);
    expect(await runIds(list)).toEqual([runId]);
    const named = await fetch(`${s.baseUrl}/runs?user_id=bob`, { headers: bearer(ALICE) });
    expect(named.status).toBe(403);
    const byHeader = await fetch(`${s.baseUrl}/runs/${runId}`, {
      headers: { ...bearer(ALICE), "x-fermilink-user-id": "bob" },
    });
    expect(byHeader.status).toBe(403);
    // Bob's own token: Alice's run does not exist for him.
    expect((await fetch(`${s.baseUrl}/runs/${runId}`, { headers: bearer(BOB) })).status).toBe(404);
    const bobList = await fetch(`${s.baseUrl}/runs`, { headers: bearer(BOB) });
    expect(await runIds(bobList)).toEqual([]);
    const svc = await fetch(`${s.baseUrl}/runs/${runId}?user_id=alice`, { headers: bearer(SVC) });
    expect(svc.status).toBe(200);
  });

  it("answers a wrong method on a guarded route 405 with Allow, as with auth off, before asking for a token", async () => {
    const s = await server();
    const runId = (await sseRun(s.baseUrl, { user_prompt: "hi" }, bearer(ALICE))).meta.run_id;
    for (const [method, p, allow] of [
      ["GET", "/run", "POST"],
      ["HEAD", "/run", "POST"],
      ["PUT", "/run", "POST"],
      ["POST", "/runs", "GET, HEAD"],
      ["DELETE", `/runs/${runId}`, "GET, HEAD"],
      ["POST", `/runs/${runId}/events`, "GET, HEAD"],
      ["GET", `/runs/${runId}/cancel`, "POST"],
      ["POST", "/packages", "GET, HEAD"],
    ] as const) {
      const res = await fetch(`${s.baseUrl}${p}`, { method });
      const got = { status: res.status, allow: res.headers.get("allow") };
      expect({ method, p, ...got }).toEqual({ method, p, status: 405, allow });
      expect(res.headers.get("www-authenticate"), `${method} ${p}`).toBeNull();
    }
    // A right method still needs the token, and a wrong one with a token gets the same 405.
    expect((await fetch(`${s.baseUrl}/runs/${runId}/cancel`, { method: "POST" })).status).toBe(401);
    expect((await fetch(`${s.baseUrl}/run`, { headers: bearer(ALICE) })).status).toBe(405);
    // Over HTTP/2 too; a body sent with the wrong method does not leave the stream open.
    const put = await h2Upload(s.baseUrl, { ":method": "PUT", ":path": "/run" }, 2 * 1024 * 1024);
    expect([put.status, put.closed, put.rstCode]).toEqual([405, true, 0]);
  });

  it("leaves /healthz, the web app, ops, preflights and reflection open", async () => {
    const s = await server({
      ...AUTH_ENV,
      FERMILINK_RUNNER_CORS_ORIGINS: "http://app.example",
    });
    expect((await fetch(`${s.baseUrl}/healthz`)).status).toBe(200);
    expect((await fetch(`${s.baseUrl}/`)).status).toBe(200);
    expect((await fetch(`${s.baseUrl}/ops/concurrency`)).status).toBe(200);
    const preflight = await fetch(`${s.baseUrl}/run`, {
      method: "OPTIONS",
      headers: {
        origin: "http://app.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
      },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get("access-control-allow-headers")).toMatch(/\bAuthorization\b/);
    const reflection = createClient(ServerReflection, createGrpcTransport({ baseUrl: s.baseUrl }));
    async function* ask() {
      yield { messageRequest: { case: "listServices" as const, value: "" } };
    }
    const answers = await collect(reflection.serverReflectionInfo(ask()));
    const listed =
      answers[0]?.messageResponse.case === "listServicesResponse"
        ? answers[0].messageResponse.value.service.map((x) => x.name)
        : [];
    expect(listed).toContain(RunService.typeName);
  });
});

const transports: Record<string, (baseUrl: string) => Transport> = {
  // Run and Attach over these two take the direct path (direct-run-stream.ts).
  "Connect (binary)": (baseUrl) => createConnectTransport({ baseUrl, httpVersion: "1.1" }),
  gRPC: (baseUrl) => createGrpcTransport({ baseUrl }),
  "Connect (JSON)": (baseUrl) =>
    createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: false }),
  "gRPC-Web": (baseUrl) => createGrpcWebTransport({ baseUrl, httpVersion: "1.1" }),
};

async function codeOf(p: Promise<unknown>): Promise<Code | "ok"> {
  try {
    await p;
    return "ok";
  } catch (err) {
    return ConnectError.from(err).code;
  }
}

describe.each(Object.entries(transports))(
  "auth on RunService and PackageService via %s",
  (_n, make) => {
    it("unauthenticated / permission_denied / ok on every method", async () => {
      const s = await server();
      const run = createClient(RunService, make(s.baseUrl));
      const pkgs = createClient(PackageService, make(s.baseUrl));
      const as = (token: string) => ({ headers: bearer(token) });
      const runAs = (userId: string, opts?: { headers: Record<string, string> }) =>
        codeOf(collect(run.run({ userPrompt: "hi", userId }, opts)));

      expect(await runAs("")).toBe(Code.Unauthenticated);
      expect(await runAs("", as("wrong-token-0123456789abcdef"))).toBe(Code.Unauthenticated);
      expect(await runAs("bob", as(ALICE))).toBe(Code.PermissionDenied);
      const events = await collect(run.run({ userPrompt: "hi" }, as(ALICE)));
      expect(events.at(-1)?.event.case).toBe("exit");
      const runId = events[0]?.runId ?? "";

      expect(await codeOf(collect(run.attach({ runId })))).toBe(Code.Unauthenticated);
      expect(await codeOf(collect(run.attach({ runId, userId: "bob" }, as(ALICE))))).toBe(
        Code.PermissionDenied,
      );
      expect(await codeOf(collect(run.attach({ runId }, as(BOB))))).toBe(Code.NotFound);
      expect((await collect(run.attach({ runId }, as(ALICE)))).length).toBe(events.length);

      expect(await codeOf(run.getRun({ runId }))).toBe(Code.Unauthenticated);
      expect(await codeOf(run.getRun({ runId }, as(BOB)))).toBe(Code.NotFound);
      expect(await codeOf(run.getRun({ runId, userId: "alice" }, as(SVC)))).toBe("ok");
      expect(await codeOf(run.cancel({ runId }))).toBe(Code.Unauthenticated);
      expect(await codeOf(run.cancel({ runId, userId: "bob" }, as(ALICE)))).toBe(
        Code.PermissionDenied,
      );
      expect(await codeOf(run.cancel({ runId }, as(ALICE)))).toBe("ok");
      expect(await codeOf(run.listRuns({}))).toBe(Code.Unauthenticated);
      expect(await codeOf(run.listRuns({ userId: "bob" }, as(ALICE)))).toBe(Code.PermissionDenied);
      expect((await run.listRuns({}, as(ALICE))).runs.map((r) => r.runId)).toEqual([runId]);

      expect(await codeOf(pkgs.listPackages({}))).toBe(Code.Unauthenticated);
      expect(await codeOf(pkgs.listPackages({}, as("x".repeat(20))))).toBe(Code.Unauthenticated);
      expect(await codeOf(pkgs.listPackages({}, as(BOB)))).toBe("ok");

      const err = await collect(run.run({ userPrompt: "hi" })).catch((e: unknown) => e);
      expect(ConnectError.from(err).rawMessage).toMatch(/send Authorization: Bearer <token>/);
    });
  },
);

describe("the terminal client against a runner with auth", () => {
  it("runs with --token or FERMILINK_RUNNER_TOKEN, and is refused without one or on another's session", async () => {
    const s = await server();
    const url = ["--url", s.baseUrl];
    const bare = await cliRun(["hi", ...url, "--session", "t1"]);
    expect(bare.code).toBe(3);
    expect(bare.err).toContain("Unauthenticated");
    expect(bare.err).toContain("pass it with --token or FERMILINK_RUNNER_TOKEN");
    const alice = await cliRun(["hi", ...url, "--session", "t1", "--token", ALICE]);
    expect(alice.err).toBe("");
    expect(alice.code).toBe(0);
    expect(alice.out).toContain("session t1");
    // From the environment, as bob: alice's session is not his.
    const bob = await cliRun(["hi", ...url, "--session", "t1"], { FERMILINK_RUNNER_TOKEN: BOB });
    expect(bob.code).toBe(3);
    expect(bob.err).toContain("PermissionDenied");
    for (const r of [bare, alice, bob]) expect(r.out + r.err).not.toMatch(/token-0123456789/);
  });
});

describe("a refused call on HTTP/1.1", () => {
  it("reads a small body it refuses, so the client gets the refusal and the connection stays usable", async () => {
    const s = await server();
    const body = envelope(
      0,
      toBinary(RunRequestSchema, create(RunRequestSchema, { userPrompt: "hi" })),
    );
    const sock = net.connect(Number(new URL(s.baseUrl).port), "127.0.0.1");
    let got = "";
    sock.on("data", (d: Buffer) => {
      got += d.toString("latin1");
    });
    const closed = new Promise<void>((r) => sock.once("close", () => r()));
    sock.on("error", () => {});
    // The Run call (the direct stream path) with no token: headers first, the body a moment
    // later, as a client still writing it. Closing the connection after the refusal gave such a
    // client a broken pipe (EPIPE) instead of the answer.
    sock.write(
      "POST /fermilink.runner.v1.RunService/Run HTTP/1.1\r\nHost: x\r\n" +
        "Content-Type: application/connect+proto\r\nConnect-Protocol-Version: 1\r\n" +
        `Content-Length: ${body.length}\r\n\r\n`,
    );
    await new Promise((r) => setTimeout(r, 100));
    sock.write(body);
    const until = async (done: () => boolean, what: string) => {
      for (let i = 0; i < 200 && !done(); i++) await new Promise((r) => setTimeout(r, 25));
      if (!done()) throw new Error(`${what}; got ${JSON.stringify(got)}`);
    };
    await until(() => got.includes("unauthenticated"), "no refusal");
    expect(got).toMatch(/^HTTP\/1\.1 200 /);
    expect(got.toLowerCase()).not.toContain("connection: close");
    // The same connection serves the next request.
    sock.write("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    await until(() => got.includes('{"status":"ok"}'), "no answer to the next request");
    sock.end();
    await closed;
  });
});

describe("sessions belong to the user who created them", () => {
  it("refuses another user's run on a session, also through a service token, across a restart", async () => {
    const storeDir = await mkdtemp(path.join(tmpdir(), "flr-auth-store-"));
    dirs.push(storeDir);
    const env = { ...AUTH_ENV, FERMILINK_RUNNER_STORE_PATH: path.join(storeDir, "runs.sqlite3") };
    const a = await server(env);
    const run = (body: Record<string, unknown>, token: string) =>
      sseRun(a.baseUrl, { user_prompt: "hi", ...body }, bearer(token));
    expect((await run({ session_id: "s1" }, ALICE)).status).toBe(200);
    const bob = await run({ session_id: "s1" }, BOB);
    expect(bob.status).toBe(403);
    expect(JSON.parse(bob.text)).toMatchObject({ code: "PERMISSION_DENIED" });
    expect(JSON.parse(bob.text).detail).toMatch(/Session s1 belongs to another user/);
    expect((await run({ session_id: "s1", user_id: "bob" }, SVC)).status).toBe(403);
    // A service run naming no user is not the owner either.
    expect((await run({ session_id: "s1" }, SVC)).status).toBe(403);
    expect((await run({ session_id: "s1", user_id: " alice" }, SVC)).status).toBe(200);
    expect((await run({ session_id: "s1" }, ALICE)).status).toBe(200);
    // A session first run with no user belongs to no user.
    expect((await run({ session_id: "s2" }, SVC)).status).toBe(200);
    expect((await run({ session_id: "s2" }, ALICE)).status).toBe(403);
    // Refused before admission: nothing queued or running was left by the refusals.
    expect(a.app.admission.activeTotal + a.app.admission.pendingTotal).toBe(0);

    await a.stop();
    servers.splice(servers.indexOf(a), 1);
    const b = await server(env);
    const again = (token: string) =>
      sseRun(b.baseUrl, { user_prompt: "hi", session_id: "s1" }, bearer(token));
    expect((await again(BOB)).status).toBe(403);
    expect((await again(ALICE)).status).toBe(200);
  });

  it("records no owner while auth is off (FermiLink's contract); once on, a session is its earliest stored user's", async () => {
    const storeDir = await mkdtemp(path.join(tmpdir(), "flr-auth-store-"));
    dirs.push(storeDir);
    const store = { FERMILINK_RUNNER_STORE_PATH: path.join(storeDir, "runs.sqlite3") };
    const off = await server(store);
    const body = { user_prompt: "hi", session_id: "s1" };
    const anonymous = { user_prompt: "hi", session_id: "s2" };
    expect((await sseRun(off.baseUrl, { ...body, user_id: "alice" })).status).toBe(200);
    expect((await sseRun(off.baseUrl, { ...body, user_id: "bob" })).status).toBe(200);
    expect((await sseRun(off.baseUrl, anonymous)).status).toBe(200);
    expect((await fetch(`${off.baseUrl}/runs`)).status).toBe(200);
    await off.stop();
    servers.splice(servers.indexOf(off), 1);
    // Turned on later: s1 is Alice's, whose run came first; Bob's later run there gives him nothing.
    const on = await server({ ...AUTH_ENV, ...store });
    expect((await sseRun(on.baseUrl, body, bearer(BOB))).status).toBe(403);
    expect((await sseRun(on.baseUrl, body, bearer(ALICE))).status).toBe(200);
    // A session whose stored runs name no user goes to its first run under auth.
    expect((await sseRun(on.baseUrl, anonymous, bearer(BOB))).status).toBe(200);
    expect((await sseRun(on.baseUrl, anonymous, bearer(ALICE))).status).toBe(403);
  });

  it("retention drops a session's owner once nothing of the session is left: no stored run, no workspace", async () => {
    const s = await server();
    const run = (sessionId: string, token: string) =>
      sseRun(s.baseUrl, { user_prompt: "hi", session_id: sessionId }, bearer(token));
    const store = (s.app.pipeline as unknown as { deps: { store: SqliteRunStore } }).deps.store;
    const remains = {
      workspacesRoot: s.workspacesRoot,
      sessionsInMemory: () => s.app.pipeline.sessionsInMemory(),
    };
    for (const id of ["s1", "s2"]) expect((await run(id, ALICE)).status).toBe(200);
    // Every run goes (the clock past their age and their readers' grace).
    startRetention(
      store,
      { retentionMs: 0, maxBytes: 1024 ** 4 },
      s.app.logger,
      () => Date.now() + 2 * READ_GRACE_MS,
    ).stop();
    expect(await runIds(await fetch(`${s.baseUrl}/runs`, { headers: bearer(ALICE) }))).toEqual([]);
    // The workspaces are still there: the sessions stay Alice's.
    expect(await pruneSessionOwners(store, remains)).toBe(0);
    expect((await run("s1", BOB)).status).toBe(403);
    // Her s3 keeps its stored run when its workspace goes; s1, gone from disk too, is free.
    expect((await run("s3", ALICE)).status).toBe(200);
    for (const id of ["s1", "s3"]) await rm(path.join(s.workspacesRoot, id), { recursive: true });
    expect(await pruneSessionOwners(store, remains)).toBe(1);
    expect((await run("s1", BOB)).status).toBe(200);
    expect((await run("s2", BOB)).status).toBe(403);
    expect((await run("s3", BOB)).status).toBe(403);
  });
});
