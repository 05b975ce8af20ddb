/**
 * A request whose body stalls is refused once the body deadline passes
 * (src/transport/body-deadline.ts, shortened here to LIMIT_MS): 408 on the
 * SSE route, `deadline_exceeded` on Connect and gRPC (the direct path and
 * connect-node's), its connection or stream closed, nothing admitted. A
 * request whose body ended streams on past the deadline. A reflection stream
 * (bidi) is bounded between its messages instead.
 */
import { readdirSync } from "node:fs";
import http2 from "node:http2";
import net from "node:net";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import { OpsService } from "../../gen/fermilink/runner/v1/ops_pb.js";
import { ExitReason, RunRequestSchema, RunService } from "../../gen/fermilink/runner/v1/run_pb.js";
import {
  ServerReflection,
  ServerReflectionRequestSchema,
} from "../../gen/grpc/reflection/v1/reflection_pb.js";
import { collect } from "../helpers/collect.js";
import { envelope } from "../helpers/envelope.js";
import { h2Upload } from "../helpers/h2-upload.js";
import { postRun } from "../helpers/sse-client.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { until } from "../helpers/until.js";

const LIMIT_MS = 400;
/** What the refusal says, on every face. */
const SAYS = "The request body did not arrive within 0.4 s";

let server: TestServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

const openFds = () => readdirSync("/proc/self/fd").length;

/** Runs the server made (every user's). */
const runCount = (s: TestServer) =>
  s.app.pipeline.listRuns({ viewer: { userId: null }, sessionId: null, limit: 100, after: null })
    .length;

/** Write `head` on a raw HTTP/1.1 connection, then nothing: what came back, and when it closed. */
function stalledH1(port: number, head: string): Promise<{ text: string; closedAfterMs: number }> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    let text = "";
    const socket = net.connect(port, "127.0.0.1", () => socket.write(head));
    socket.on("data", (d: Buffer) => {
      text += d.toString("latin1");
    });
    socket.on("error", () => {});
    socket.on("close", () => resolve({ text, closedAfterMs: Date.now() - t0 }));
  });
}

/** The first 5 bytes of a Run request's envelope, and no more: a body that never completes. */
const partialRunEnvelope = () =>
  envelope(
    0,
    toBinary(RunRequestSchema, create(RunRequestSchema, { userPrompt: "never sent" })),
  ).subarray(0, 7);

const RUN = `/${RunService.typeName}/Run`;
const REFLECT = `/${ServerReflection.typeName}/ServerReflectionInfo`;

const listServices = () =>
  envelope(
    0,
    toBinary(
      ServerReflectionRequestSchema,
      create(ServerReflectionRequestSchema, {
        messageRequest: { case: "listServices", value: "" },
      }),
    ),
  );

describe("a request body that stalls", () => {
  it("is answered 408 on POST /run (HTTP/1.1) and its connection closed, while a run whose body came streams on", async () => {
    const s = await startTestServer({}, { bodyTimeoutMs: LIMIT_MS });
    server = s;
    // A first run opens what the server keeps open for later ones (its workers, the store's files).
    // (Its keep-alive connection, counted here, is the one the long run takes.)
    expect((await postRun(s.baseUrl, { user_prompt: "warm-up" })).status).toBe(200);
    const fds = openFds();
    // A run whose body is complete, streaming for longer than the body deadline.
    const long = postRun(s.baseUrl, { user_prompt: "#scenario=sleep-1s" });
    const stalled = stalledH1(
      s.app.port,
      "POST /run HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n" +
        '{"user_prompt": "x',
    );
    // While it waits for its body, it holds no admission slot: the long run holds the one taken.
    await new Promise((r) => setTimeout(r, LIMIT_MS / 2));
    expect(s.app.admission.activeTotal + s.app.admission.pendingTotal).toBeLessThanOrEqual(1);
    const { text, closedAfterMs } = await stalled;
    const [head = "", body = ""] = text.split("\r\n\r\n");
    expect(head.split("\r\n", 1)[0]).toBe("HTTP/1.1 408 Request Timeout");
    expect(head.toLowerCase()).toContain("connection: close");
    expect(JSON.parse(body)).toEqual({
      detail: `${SAYS}: send the whole request message at once.`,
      code: "BODY_TIMEOUT",
    });
    expect(closedAfterMs).toBeGreaterThanOrEqual(LIMIT_MS - 50);
    expect(closedAfterMs).toBeLessThan(LIMIT_MS + 2500);
    const done = await long;
    expect(done.status).toBe(200);
    const exit = JSON.parse(done.events.at(-1)?.data ?? "{}");
    expect([done.events.at(-1)?.event, exit.reason]).toEqual(["runner.exit", "completed"]);
    // One run was made: the stalled request started nothing.
    expect(runCount(s)).toBe(2);
    await until(() => s.app.connectionCount === 0, "every connection closed");
    await until(() => openFds() <= fds, `open descriptors back to ${fds}`);
  });

  it("is answered 408 on POST /run over HTTP/2, and the stream closed", async () => {
    server = await startTestServer({}, { bodyTimeoutMs: LIMIT_MS });
    const got = await h2Upload(
      server.baseUrl,
      { ":path": "/run", "content-type": "application/json" },
      Buffer.from('{"user_prompt": "x'),
    );
    expect(got.status).toBe(408);
    expect(JSON.parse(got.body.toString()).code).toBe("BODY_TIMEOUT");
    expect([got.closed, got.rstCode]).toEqual([true, http2.constants.NGHTTP2_NO_ERROR]);
    expect(runCount(server)).toBe(0);
  });

  it.each([
    ["gRPC, written directly", { "content-type": "application/grpc" }],
    [
      "gRPC with a deadline, through connect-node",
      { "content-type": "application/grpc", "grpc-timeout": "100S" },
    ],
  ])(
    "ends a Run call over %s with deadline_exceeded, and the stream closed",
    async (_, headers) => {
      server = await startTestServer({}, { bodyTimeoutMs: LIMIT_MS });
      const got = await h2Upload(
        server.baseUrl,
        { ":path": RUN, te: "trailers", ...headers },
        partialRunEnvelope(),
      );
      expect(got.status).toBe(200);
      expect(got.trailers["grpc-status"]).toBe(String(Code.DeadlineExceeded));
      expect(decodeURIComponent(String(got.trailers["grpc-message"]))).toContain(SAYS);
      expect([got.closed, got.rstCode]).toEqual([true, http2.constants.NGHTTP2_NO_ERROR]);
      expect(runCount(server)).toBe(0);
      expect(server.app.admission.activeTotal + server.app.admission.pendingTotal).toBe(0);
    },
  );

  it.each([
    ["Connect protobuf, written directly", "application/connect+proto"],
    ["Connect JSON, through connect-node", "application/connect+json"],
  ])("ends a Run call over %s with deadline_exceeded, and the stream closed", async (_, type) => {
    server = await startTestServer({}, { bodyTimeoutMs: LIMIT_MS });
    const got = await h2Upload(
      server.baseUrl,
      { ":path": RUN, "content-type": type },
      type.endsWith("json") ? Buffer.from([0, 0, 0, 0, 40, 0x7b]) : partialRunEnvelope(),
    );
    expect(got.status).toBe(200);
    // The end-of-stream message: flags 2, then its JSON.
    expect(got.body[0]).toBe(2);
    expect(JSON.parse(got.body.subarray(5).toString())).toEqual({
      error: {
        code: "deadline_exceeded",
        message: `${SAYS}: send the whole request message at once.`,
      },
    });
    expect([got.closed, got.rstCode]).toEqual([true, http2.constants.NGHTTP2_NO_ERROR]);
    expect(runCount(server)).toBe(0);
  });

  it("ends a Connect unary call over HTTP/1.1 (connect-node) with deadline_exceeded and closes the connection", async () => {
    server = await startTestServer({}, { bodyTimeoutMs: LIMIT_MS });
    const { text, closedAfterMs } = await stalledH1(
      server.app.port,
      `POST /${OpsService.typeName}/GetConcurrency HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{`,
    );
    const [head = "", body = ""] = text.split("\r\n\r\n");
    // Connect's HTTP status for deadline_exceeded.
    expect(head.split("\r\n", 1)[0]).toBe("HTTP/1.1 504 Gateway Timeout");
    expect(head.toLowerCase()).toContain("connection: close");
    expect(JSON.parse(body).code).toBe("deadline_exceeded");
    expect(closedAfterMs).toBeLessThan(LIMIT_MS + 2500);
    await until(() => server?.app.connectionCount === 0, "the connection closed");
  });

  it("never cuts a call whose message came: Run streams past the deadline on every path, beside one refused", async () => {
    server = await startTestServer({}, { bodyTimeoutMs: LIMIT_MS });
    const request = { userPrompt: "#scenario=sleep-1s" };
    const [stalled, direct, viaConnectNode, connect] = await Promise.all([
      h2Upload(
        server.baseUrl,
        { ":path": RUN, te: "trailers", "content-type": "application/grpc" },
        partialRunEnvelope(),
      ),
      collect(
        createClient(RunService, createGrpcTransport({ baseUrl: server.baseUrl })).run(request),
      ),
      // A deadline sends the call through connect-node.
      collect(
        createClient(RunService, createGrpcTransport({ baseUrl: server.baseUrl })).run(request, {
          timeoutMs: 100_000,
        }),
      ),
      collect(
        createClient(
          RunService,
          createConnectTransport({ baseUrl: server.baseUrl, httpVersion: "1.1" }),
        ).run(request),
      ),
    ]);
    expect(stalled.trailers["grpc-status"]).toBe(String(Code.DeadlineExceeded));
    for (const events of [direct, viaConnectNode, connect]) {
      const last = events.at(-1)?.event;
      expect(last?.case === "exit" && ExitReason[last.value.reason]).toBe("COMPLETED");
    }
  });

  it.each([
    ["sends nothing", Buffer.alloc(0), 0],
    ["sends part of a message", listServices().subarray(0, 6), 0],
    [
      "sends a message, then part of one",
      Buffer.concat([listServices(), listServices().subarray(0, 3)]),
      1,
    ],
  ])(
    "ends a reflection stream whose client %s with deadline_exceeded, and the stream closed",
    async (_, bytes, answered) => {
      server = await startTestServer({}, { bodyTimeoutMs: LIMIT_MS });
      const t0 = Date.now();
      const got = await h2Upload(
        server.baseUrl,
        { ":path": REFLECT, te: "trailers", "content-type": "application/grpc" },
        bytes,
      );
      expect(got.status).toBe(200);
      expect(got.trailers["grpc-status"]).toBe(String(Code.DeadlineExceeded));
      expect(decodeURIComponent(String(got.trailers["grpc-message"]))).toContain(
        "No request message arrived on this stream within 0.4 s",
      );
      expect([got.closed, got.rstCode]).toEqual([true, http2.constants.NGHTTP2_NO_ERROR]);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(LIMIT_MS - 50);
      // Each whole message sent was answered first.
      let answers = 0;
      for (let at = 0; at < got.body.length; at += 5 + got.body.readUInt32BE(at + 1)) answers++;
      expect(answers).toBe(answered);
    },
  );

  it("never cuts a reflection stream whose messages keep coming, however long it lasts", async () => {
    server = await startTestServer({}, { bodyTimeoutMs: LIMIT_MS });
    const client = createClient(ServerReflection, createGrpcTransport({ baseUrl: server.baseUrl }));
    const asks = 6;
    async function* requests() {
      for (let i = 0; i < asks; i++) {
        // Over the stream's life, well past the limit; each within it of the one before.
        if (i > 0) await new Promise((r) => setTimeout(r, LIMIT_MS / 2));
        yield { messageRequest: { case: "listServices" as const, value: "" } };
      }
    }
    const t0 = Date.now();
    const answers = await collect(client.serverReflectionInfo(requests()));
    expect(Date.now() - t0).toBeGreaterThan(2 * LIMIT_MS);
    expect(answers.map((a) => a.messageResponse.case)).toEqual(
      Array(asks).fill("listServicesResponse"),
    );
  });
});
