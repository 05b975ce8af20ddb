import http2 from "node:http2";
import {
  Code,
  ConnectError,
  createClient,
  type Interceptor,
  type Transport,
} from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import {
  ExitReason,
  type RunEvent,
  RunService,
  RunStatus,
} from "../../gen/fermilink/runner/v1/run_pb.js";
import { collect } from "../helpers/collect.js";
import { envelope } from "../helpers/envelope.js";
import { h2Upload } from "../helpers/h2-upload.js";
import { rawRequest } from "../helpers/raw-http.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { until } from "../helpers/until.js";

let server: TestServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

/**
 * Each protocol with the deadline header it carries. The header is sent as is
 * (no `timeoutMs`): the client does not enforce the deadline itself, so what
 * ends the call is the server's reading of it, as with a client in any language.
 */
const protocols: [
  string,
  (baseUrl: string) => Transport,
  (ms: number) => Record<string, string>,
][] = [
  [
    "gRPC over h2c",
    (baseUrl) => createGrpcTransport({ baseUrl }),
    (ms) => ({ "grpc-timeout": `${ms}m` }),
  ],
  [
    "the Connect protocol",
    (baseUrl) => createConnectTransport({ baseUrl, httpVersion: "1.1" }),
    (ms) => ({ "connect-timeout-ms": String(ms) }),
  ],
  [
    "gRPC-Web",
    (baseUrl) => createGrpcWebTransport({ baseUrl, httpVersion: "1.1" }),
    (ms) => ({ "grpc-timeout": `${ms}m` }),
  ],
];

/** The events a stream sent and the code it ended with (OK: null). */
async function drain(
  stream: AsyncIterable<RunEvent>,
): Promise<{ events: RunEvent[]; code: Code | null }> {
  const events: RunEvent[] = [];
  try {
    for await (const e of stream) events.push(e);
    return { events, code: null };
  } catch (err) {
    return { events, code: ConnectError.from(err).code };
  }
}

describe.each(protocols)("the server's deadline over %s", (_name, transport, deadline) => {
  it("ends a long run's call deadline_exceeded (not ok without an exit), the run client_gone, its process and slot freed", async () => {
    server = await startTestServer();
    const s = server;
    const client = createClient(RunService, transport(s.baseUrl));
    const t0 = Date.now();
    const { events, code } = await drain(
      client.run(
        { userPrompt: "#scenario=hold", sessionId: "deadline" },
        { headers: deadline(1000) },
      ),
    );
    expect(Date.now() - t0).toBeLessThan(8000);
    expect(events[0]?.event.case).toBe("meta");
    expect(events.some((e) => e.event.case === "exit")).toBe(false);
    expect(code).toBe(Code.DeadlineExceeded);
    const runId = events[0]?.runId ?? "";
    const info = await client.getRun({ runId });
    await until(() => s.app.pipeline.liveRuns === 0, "the run to end");
    const ended = await client.getRun({ runId });
    expect([RunStatus[ended.status], ExitReason[ended.exitReason]]).toEqual([
      "FINISHED",
      "CLIENT_GONE",
    ]);
    expect(info.runId).toBe(runId);
    expect(s.app.admission.activeTotal).toBe(0);
  });

  it("ends a detached run's call deadline_exceeded and keeps the run, which Cancel ends", async () => {
    server = await startTestServer();
    const s = server;
    const client = createClient(RunService, transport(s.baseUrl));
    const { events, code } = await drain(
      client.run(
        { userPrompt: "#scenario=hold", sessionId: "deadline-detached", detach: true },
        { headers: deadline(1000) },
      ),
    );
    expect(code).toBe(Code.DeadlineExceeded);
    const runId = events[0]?.runId ?? "";
    expect(RunStatus[(await client.getRun({ runId })).status]).toBe("RUNNING");
    expect(s.app.admission.activeTotal).toBe(1);
    const cancelled = await client.cancel({ runId });
    expect(ExitReason[cancelled.exitReason]).toBe("CANCELLED");
    expect(s.app.admission.activeTotal).toBe(0);
  });

  it("ends an Attach cut by its deadline deadline_exceeded, and the run goes on", async () => {
    server = await startTestServer();
    const client = createClient(RunService, transport(server.baseUrl));
    let runId = "";
    for await (const e of client.run({
      userPrompt: "#scenario=hold",
      sessionId: "deadline-attach",
      detach: true,
    })) {
      runId = e.runId;
      break;
    }
    const { events, code } = await drain(client.attach({ runId }, { headers: deadline(500) }));
    expect(events[0]?.event.case).toBe("meta");
    expect(code).toBe(Code.DeadlineExceeded);
    expect(RunStatus[(await client.getRun({ runId })).status]).toBe("RUNNING");
    await client.cancel({ runId });
  });

  it("refuses a call that arrives past its deadline deadline_exceeded (not internal), starting nothing", async () => {
    server = await startTestServer();
    const s = server;
    const client = createClient(RunService, transport(s.baseUrl));
    const { events, code } = await drain(
      client.run({ userPrompt: "hi", sessionId: "expired" }, { headers: deadline(0) }),
    );
    expect({ events: events.length, code }).toEqual({ events: 0, code: Code.DeadlineExceeded });
    await until(() => s.app.pipeline.liveRuns === 0, "no live run");
    expect((await client.listRuns({})).runs.every((r) => r.status === RunStatus.FINISHED)).toBe(
      true,
    );
  });
});

describe.each(protocols)("a unary call's deadline over %s", (_name, transport, deadline) => {
  it("ends a Cancel still waiting out a stubborn process's kill grace deadline_exceeded; the run still ends", async () => {
    server = await startTestServer({ FERMILINK_RUNNER_KILL_GRACE_SECONDS: "2.5" });
    const s = server;
    const client = createClient(RunService, transport(s.baseUrl));
    let runId = "";
    for await (const e of client.run({
      userPrompt: "#scenario=ignore-sigterm",
      sessionId: "unary-deadline",
      detach: true,
    })) {
      runId = e.runId;
      if (e.event.case === "agent") break;
    }
    const t0 = Date.now();
    const code = await client.cancel({ runId }, { headers: deadline(500) }).then(
      () => null,
      (err: unknown) => ConnectError.from(err).code,
    );
    // Answered at its deadline, not after the 2.5 s grace.
    expect({ code, fast: Date.now() - t0 < 2000 }).toEqual({
      code: Code.DeadlineExceeded,
      fast: true,
    });
    // The cancel asked for goes on: the run ends cancelled once the grace is over.
    await until(() => s.app.pipeline.liveRuns === 0, "the run to end", 10_000);
    expect(ExitReason[(await client.getRun({ runId })).exitReason]).toBe("CANCELLED");
  });

  it("refuses a unary call that arrives past its deadline, doing nothing", async () => {
    server = await startTestServer();
    const s = server;
    const client = createClient(RunService, transport(s.baseUrl));
    let runId = "";
    for await (const e of client.run({
      userPrompt: "#scenario=hold",
      sessionId: "unary-expired",
      detach: true,
    })) {
      runId = e.runId;
      break;
    }
    await expect(client.cancel({ runId }, { headers: deadline(0) })).rejects.toMatchObject({
      code: Code.DeadlineExceeded,
    });
    await new Promise((r) => setTimeout(r, 200));
    expect(RunStatus[(await client.getRun({ runId })).status]).toBe("RUNNING");
    await client.cancel({ runId });
  });
});

/** Sends each call of a client to `path` instead: a procedure the server does not serve. */
const callingPath =
  (path: string): Interceptor =>
  (next) =>
  (req) =>
    next({ ...req, url: new URL(path, req.url).toString() });

describe("a procedure the server does not serve", () => {
  const unknown: [string, (baseUrl: string, i: Interceptor) => Transport, string | null][] = [
    [
      "gRPC over h2c",
      (baseUrl, i) => createGrpcTransport({ baseUrl, interceptors: [i] }),
      "unknown method Nope for service fermilink.runner.v1.RunService",
    ],
    [
      "gRPC-Web",
      (baseUrl, i) => createGrpcWebTransport({ baseUrl, httpVersion: "1.1", interceptors: [i] }),
      "unknown method Nope for service fermilink.runner.v1.RunService",
    ],
    [
      "gRPC-Web over h2c",
      (baseUrl, i) => createGrpcWebTransport({ baseUrl, httpVersion: "2", interceptors: [i] }),
      "unknown method Nope for service fermilink.runner.v1.RunService",
    ],
    // connect-node's (and connect-go's) answer: HTTP 404, which Connect clients read as unimplemented.
    [
      "the Connect protocol",
      (baseUrl, i) => createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors: [i] }),
      null,
    ],
  ];

  it.each(unknown)("is unimplemented over %s", async (_name, transport, message) => {
    server = await startTestServer();
    const base = server.baseUrl;
    const nope = callingPath("/fermilink.runner.v1.RunService/Nope");
    const unary = createClient(RunService, transport(base, nope));
    const err = await unary.getRun({ runId: "x" }).then(
      () => null,
      (e: unknown) => ConnectError.from(e),
    );
    expect(err?.code).toBe(Code.Unimplemented);
    if (message !== null) expect(err?.rawMessage).toBe(message);
    // A server-streaming call too; an unknown service names the service.
    const streaming = createClient(RunService, transport(base, callingPath("/no.such.v1.Svc/Run")));
    const streamErr = await collect(streaming.run({ userPrompt: "hi" })).then(
      () => null,
      (e: unknown) => ConnectError.from(e),
    );
    expect(streamErr?.code).toBe(Code.Unimplemented);
    if (message !== null) expect(streamErr?.rawMessage).toBe("unknown service no.such.v1.Svc");
  });

  it("answers gRPC with HTTP 200 and grpc-status 12 in the trailers, and stops an upload it never reads", async () => {
    server = await startTestServer();
    const h2 = await h2Upload(
      server.baseUrl,
      {
        ":path": "/fermilink.runner.v1.RunService/Nope",
        "content-type": "application/grpc",
        te: "trailers",
      },
      2 * 1024 * 1024,
    );
    expect(h2.status).toBe(200);
    expect(h2.trailers["grpc-status"]).toBe(String(Code.Unimplemented));
    expect({ closed: h2.closed, rstCode: h2.rstCode }).toEqual({ closed: true, rstCode: 0 });
    // Connect and FermiLink's own routes still get the 404 of an unknown path.
    const connect = await fetch(`${server.baseUrl}/fermilink.runner.v1.RunService/Nope`, {
      method: "POST",
      headers: { "content-type": "application/json", "connect-protocol-version": "1" },
      body: "{}",
    });
    expect([connect.status, connect.headers.get("content-type")]).toEqual([
      404,
      "application/json",
    ]);
  });
});

/** One raw gRPC call over h2c: its trailers (empty when none came), or "hung" after 5 s. */
function grpcTrailers(
  baseUrl: string,
  path: string,
  contentType: string,
  message: string,
): Promise<http2.IncomingHttpHeaders | "hung"> {
  return new Promise((resolve, reject) => {
    // A client that takes a large header list, so that what the server sent is what is seen.
    const session = http2.connect(baseUrl, { settings: { maxHeaderListSize: 4 * 1024 * 1024 } });
    session.on("error", reject);
    const hung = setTimeout(() => {
      session.destroy();
      resolve("hung");
    }, 5000);
    const stream = session.request({
      ":method": "POST",
      ":path": path,
      "content-type": contentType,
      te: "trailers",
    });
    let trailers: http2.IncomingHttpHeaders = {};
    stream.on("trailers", (t) => {
      trailers = t;
    });
    stream.on("error", reject);
    stream.resume();
    stream.on("close", () => {
      clearTimeout(hung);
      session.close();
      resolve(trailers);
    });
    stream.end(envelope(0, Buffer.from(message)));
  });
}

describe("a status that would quote the caller's request", () => {
  // gRPC clients refuse a status header list past a bound (grpcio: 8 KiB by default).
  const statusOf = (t: http2.IncomingHttpHeaders | "hung") =>
    t === "hung"
      ? t
      : {
          status: t["grpc-status"],
          message: decodeURIComponent(String(t["grpc-message"] ?? "")),
          bytes: String(t["grpc-message"] ?? "").length,
        };

  it("quotes a JSON value it cannot decode in part, and a lone surrogate still ends the call", async () => {
    server = await startTestServer();
    const attach = "/fermilink.runner.v1.RunService/Attach";
    // protobuf-es quotes the refused value whole: the header was as large as the request.
    const huge = await grpcTrailers(
      server.baseUrl,
      attach,
      "application/grpc+json",
      JSON.stringify({ runId: "r", afterSeq: "9".repeat(500_000) }),
    );
    expect(statusOf(huge)).toEqual({
      status: String(Code.InvalidArgument),
      message: expect.stringMatching(/^cannot decode field .*after_seq from JSON: .*9{100}.*…$/),
      bytes: expect.any(Number),
    });
    expect(huge !== "hung" && String(huge["grpc-message"]).length).toBeLessThan(8192);
    // encodeURIComponent throws on a lone surrogate: connect-node never ended such a call.
    const lone = await grpcTrailers(
      server.baseUrl,
      attach,
      "application/grpc+json",
      '{"runId":"r","afterSeq":"\\ud800"}',
    );
    expect(statusOf(lone)).toEqual({
      status: String(Code.InvalidArgument),
      message: expect.stringContaining("\ufffd"),
      bytes: expect.any(Number),
    });
  });

  it("quotes an unknown procedure's path in part", async () => {
    server = await startTestServer();
    for (const path of [`/a/b/${"{".repeat(15_000)}`, `/${"x".repeat(15_000)}/Run`]) {
      const t = await grpcTrailers(server.baseUrl, path, "application/grpc", "");
      expect(statusOf(t)).toEqual({
        status: String(Code.Unimplemented),
        message: expect.stringMatching(/^(malformed method name: |unknown service ).*…/),
        bytes: expect.any(Number),
      });
      expect(t !== "hung" && String(t["grpc-message"]).length).toBeLessThan(1024);
    }
  });
});

describe("a wrong HTTP method on a procedure", () => {
  /** Status and Allow of one h2c request. */
  const h2Answer = (baseUrl: string, headers: http2.OutgoingHttpHeaders) =>
    new Promise<{ status: unknown; allow: unknown }>((resolve, reject) => {
      const session = http2.connect(baseUrl);
      session.on("error", reject);
      const stream = session.request(headers, { endStream: true });
      stream.on("error", reject);
      stream.on("response", (h) => {
        resolve({ status: h[":status"], allow: h.allow });
        session.destroy();
      });
    });

  // RFC 9110 §15.5.6: a 405 names the methods the target serves. connect-node sent none.
  it("is a 405 that names POST in Allow, over HTTP/1.1 and HTTP/2, streaming or unary, any protocol", async () => {
    server = await startTestServer();
    const base = server.baseUrl;
    const port = Number(new URL(base).port);
    const paths = [
      "/fermilink.runner.v1.RunService/Run",
      "/fermilink.runner.v1.RunService/GetRun",
      "/fermilink.runner.v1.PackageService/ListPackages",
    ];
    const types = ["application/connect+proto", "application/json", "application/grpc"];
    for (const p of paths) {
      for (const method of ["GET", "PUT", "HEAD", "DELETE"]) {
        for (const type of types) {
          const h1 = await rawRequest(port, method, p, [
            ["Content-Type", type],
            ["Connect-Protocol-Version", "1"],
          ]);
          expect({ p, method, type, status: h1.status, allow: h1.headers.allow }).toEqual({
            p,
            method,
            type,
            status: 405,
            allow: "POST",
          });
        }
        const h2 = await h2Answer(base, {
          ":method": method,
          ":path": p,
          "content-type": "application/connect+proto",
        });
        expect({ p, method, ...h2 }).toEqual({ p, method, status: 405, allow: "POST" });
      }
    }
    // The right method is served as before, without an Allow.
    const ok = await fetch(`${base}/fermilink.runner.v1.PackageService/ListPackages`, {
      method: "POST",
      headers: { "content-type": "application/json", "connect-protocol-version": "1" },
      body: "{}",
    });
    expect([ok.status, ok.headers.get("allow")]).toEqual([200, null]);
    await ok.arrayBuffer();
  });
});

describe("a deadline longer than a timer holds (~24.8 days)", () => {
  // A Go client's context.WithTimeout(ctx, 30*24*time.Hour): Node's setTimeout fired such a
  // deadline after 1 ms, and the call ended before its first event.
  it.each([
    ["gRPC", (baseUrl: string) => createGrpcTransport({ baseUrl }), { "grpc-timeout": "720H" }],
    [
      "gRPC, 8 digits of hours",
      (baseUrl: string) => createGrpcTransport({ baseUrl }),
      {
        "grpc-timeout": "99999999H",
      },
    ],
    [
      "the Connect protocol",
      (baseUrl: string) => createConnectTransport({ baseUrl, httpVersion: "1.1" }),
      { "connect-timeout-ms": "9999999999" },
    ],
    [
      "gRPC-Web",
      (baseUrl: string) => createGrpcWebTransport({ baseUrl, httpVersion: "1.1" }),
      { "grpc-timeout": "2592000S" },
    ],
  ])("lets the run finish over %s", async (_name, transport, headers) => {
    server = await startTestServer();
    const client = createClient(RunService, transport(server.baseUrl));
    const { events, code } = await drain(
      client.run({ userPrompt: "#scenario=sleep-1s", sessionId: "long-deadline" }, { headers }),
    );
    expect(code).toBeNull();
    const last = events.at(-1)?.event;
    expect(last?.case === "exit" && ExitReason[last.value.reason]).toBe("COMPLETED");
  });
});
