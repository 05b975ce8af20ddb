/**
 * RunService.Run / Attach over protobuf gRPC and the Connect streaming
 * protocol are written by the runner itself (src/transport/connect/
 * direct-run-stream.ts); JSON, gRPC-Web, compression and deadlines go through
 * connect-node. These tests hold the two paths to the same messages and
 * check the direct path's own protocol handling with raw requests.
 */
import http2 from "node:http2";
import { Writable } from "node:stream";
import { gzipSync } from "node:zlib";
import { create, fromBinary, toBinary, toJson } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import {
  compressionGzip,
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import { OpsService } from "../../gen/fermilink/runner/v1/ops_pb.js";
import {
  AttachRequestSchema,
  type RunEvent,
  RunEventSchema,
  RunService,
} from "../../gen/fermilink/runner/v1/run_pb.js";
import { createLogger } from "../../src/log/logger.js";
import { writeBuffersAllocated } from "../../src/transport/connect/direct-run-stream.js";
import { collect } from "../helpers/collect.js";
import { envelope } from "../helpers/envelope.js";
import { h2Upload } from "../helpers/h2-upload.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { streamedEvents } from "../helpers/streamed-events.js";

let server: TestServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

const json = (events: RunEvent[]) => events.map((e) => toJson(RunEventSchema, e));

const ATTACH = `/${RunService.typeName}/Attach`;
const RUN = `/${RunService.typeName}/Run`;

/** Split a response body into envelopes. */
function envelopes(body: Buffer): { flags: number; data: Buffer }[] {
  const out: { flags: number; data: Buffer }[] = [];
  for (let i = 0; i < body.length; ) {
    const len = body.readUInt32BE(i + 1);
    out.push({ flags: body[i] ?? 0, data: body.subarray(i + 5, i + 5 + len) });
    i += 5 + len;
  }
  return out;
}

/** One raw gRPC call over h2c: response headers, body and trailers. */
async function rawGrpc(
  baseUrl: string,
  path: string,
  body: Buffer,
  extraHeaders: http2.OutgoingHttpHeaders = {},
): Promise<{
  headers: http2.IncomingHttpHeaders;
  body: Buffer;
  trailers: http2.IncomingHttpHeaders;
}> {
  const session = http2.connect(baseUrl);
  try {
    return await new Promise((resolve, reject) => {
      const stream = session.request({
        ":method": "POST",
        ":path": path,
        "content-type": "application/grpc",
        te: "trailers",
        ...extraHeaders,
      });
      let headers: http2.IncomingHttpHeaders = {};
      let trailers: http2.IncomingHttpHeaders = {};
      const chunks: Buffer[] = [];
      stream.on("response", (h) => {
        headers = h;
      });
      stream.on("trailers", (t) => {
        trailers = t;
      });
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () => resolve({ headers, body: Buffer.concat(chunks), trailers }));
      stream.on("error", reject);
      stream.end(body);
    });
  } finally {
    session.close();
  }
}

/** One raw Connect streaming call over HTTP/1.1: status, content type and envelopes. */
async function rawConnect(baseUrl: string, path: string, body: Buffer) {
  const res = await fetch(baseUrl + path, {
    method: "POST",
    headers: { "content-type": "application/connect+proto" },
    body,
  });
  return {
    status: res.status,
    type: res.headers.get("content-type"),
    envelopes: envelopes(Buffer.from(await res.arrayBuffer())),
  };
}

const attachBody = (runId: string) =>
  envelope(0, toBinary(AttachRequestSchema, create(AttachRequestSchema, { runId })));

/** One whole run over the generated gRPC client: its events, as the reference to compare with. */
function runOverGrpc(s: TestServer, sessionId: string, userPrompt: string): Promise<RunEvent[]> {
  return collect(
    createClient(RunService, createGrpcTransport({ baseUrl: s.baseUrl })).run({
      sessionId,
      userPrompt,
    }),
  );
}

describe("RunService written directly (protobuf gRPC and Connect streaming)", () => {
  it.each([
    ["the default scenario", "direct typed"],
    ["5,000 lines (many writes)", "#scenario=lines-5000"],
    ["a line larger than one write", "#scenario=huge-line"],
  ])("gives the same messages as connect-node's path for %s", async (_name, userPrompt) => {
    server = await startTestServer();
    const { baseUrl } = server;
    const direct: Record<string, Transport> = {
      grpc: createGrpcTransport({ baseUrl }),
      connect: createConnectTransport({ baseUrl, httpVersion: "1.1" }),
    };
    const viaConnectNode: Record<string, Transport> = {
      json: createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: false }),
      grpcWeb: createGrpcWebTransport({ baseUrl, httpVersion: "1.1" }),
      gzip: createGrpcTransport({ baseUrl, sendCompression: compressionGzip }),
      deadline: createGrpcTransport({ baseUrl, defaultTimeoutMs: 60_000 }),
    };
    const live = await collect(
      createClient(RunService, direct.grpc as Transport).run({ sessionId: "d1", userPrompt }),
    );
    expect(live.at(-1)?.event.case).toBe("exit");
    const runId = live[0]?.runId ?? "";
    for (const t of [...Object.values(direct), ...Object.values(viaConnectNode)]) {
      const replay = await collect(createClient(RunService, t).attach({ runId }));
      expect(json(replay)).toEqual(json(live));
    }
  });

  it("reuses its write buffers: streams of 5,000 lines at once make a few, not one per write", async () => {
    server = await startTestServer();
    const { baseUrl } = server;
    const live = await runOverGrpc(server, "d-pool", "#scenario=lines-5000");
    const runId = live[0]?.runId ?? "";
    const made = writeBuffersAllocated();
    // Four viewers at once, two per protocol (≈ 2 MB, a few hundred 8 KB writes each).
    const transports = [
      createGrpcTransport({ baseUrl }),
      createGrpcTransport({ baseUrl }),
      createConnectTransport({ baseUrl, httpVersion: "1.1" }),
      createConnectTransport({ baseUrl, httpVersion: "1.1" }),
    ];
    const replays = await Promise.all(
      transports.map((t) => collect(createClient(RunService, t).attach({ runId }))),
    );
    // A buffer reused before its socket was done with it would show here as damaged messages.
    for (const replay of replays) expect(json(replay)).toEqual(json(live));
    expect(writeBuffersAllocated() - made).toBeLessThan(16);
  });

  it("streams envelopes and ends with grpc-status 0 in the trailers", async () => {
    server = await startTestServer();
    const live = await runOverGrpc(server, "d2", "raw grpc");
    const res = await rawGrpc(server.baseUrl, ATTACH, attachBody(live[0]?.runId ?? ""));
    expect(res.headers[":status"]).toBe(200);
    expect(res.headers["content-type"]).toBe("application/grpc+proto");
    expect(res.trailers["grpc-status"]).toBe("0");
    const messages = envelopes(res.body).map((e) => fromBinary(RunEventSchema, e.data));
    expect(json(messages)).toEqual(json(live));
  });

  it("ends a Connect stream with an end-of-stream message, {} or the error", async () => {
    server = await startTestServer();
    const live = await runOverGrpc(server, "d3", "raw connect");
    const ok = await rawConnect(server.baseUrl, ATTACH, attachBody(live[0]?.runId ?? ""));
    expect(ok.status).toBe(200);
    expect(ok.type).toBe("application/connect+proto");
    const last = ok.envelopes.at(-1);
    expect(last?.flags).toBe(2);
    expect(JSON.parse(last?.data.toString() ?? "")).toEqual({});
    expect(ok.envelopes.slice(0, -1).map((e) => e.flags)).toEqual(live.map(() => 0));

    const missing = await rawConnect(server.baseUrl, ATTACH, attachBody("no-such-run"));
    expect(missing.status).toBe(200);
    expect(missing.envelopes).toHaveLength(1);
    const end = JSON.parse(missing.envelopes[0]?.data.toString() ?? "");
    expect(end.error.code).toBe("not_found");
    expect(end.error.message).toMatch(/no-such-run/);
  });

  it.each([
    ["an empty body", Buffer.alloc(0), /missing input message/],
    ["a cut envelope", Buffer.from([0, 0, 0, 0, 9, 1, 2]), /incomplete envelope/],
    ["a compressed flag without an encoding", envelope(1, new Uint8Array()), /compressed/],
    ["two messages", Buffer.concat([attachBody("a"), attachBody("b")]), /extra input message/],
    ["bytes that are not a request", envelope(0, Buffer.from([0xff, 0xff, 0xff])), /decode/],
  ])("answers %s with invalid_argument on both protocols", async (_name, body, message) => {
    server = await startTestServer();
    const grpc = await rawGrpc(server.baseUrl, ATTACH, body);
    expect(grpc.headers[":status"]).toBe(200);
    expect(grpc.trailers["grpc-status"]).toBe(String(Code.InvalidArgument));
    expect(decodeURIComponent(String(grpc.trailers["grpc-message"]))).toMatch(message);
    const connect = await rawConnect(server.baseUrl, RUN, body);
    const end = JSON.parse(connect.envelopes.at(-1)?.data.toString() ?? "");
    expect(end.error.code).toBe("invalid_argument");
    expect(end.error.message).toMatch(message);
  });

  it.each([
    ["an empty body", Buffer.alloc(0), /missing input message for server-streaming method/],
    [
      "two messages",
      Buffer.concat([attachBody("a"), attachBody("b")]),
      /extra input message for server-streaming method/,
    ],
  ])(
    "answers %s with invalid_argument on connect-node's path too (a deadline sent)",
    async (_name, body, message) => {
      server = await startTestServer();
      // A deadline takes connect-node's path, which called these `unimplemented`.
      const grpc = await rawGrpc(server.baseUrl, ATTACH, body, { "grpc-timeout": "10S" });
      expect(grpc.trailers["grpc-status"]).toBe(String(Code.InvalidArgument));
      expect(decodeURIComponent(String(grpc.trailers["grpc-message"]))).toMatch(message);
      // A unary method over gRPC takes one message as well.
      const unary = await rawGrpc(server.baseUrl, `/${OpsService.typeName}/GetConcurrency`, body);
      expect(unary.trailers["grpc-status"]).toBe(String(Code.InvalidArgument));
      expect(decodeURIComponent(String(unary.trailers["grpc-message"]))).toMatch(/unary method/);
    },
  );

  it("answers an undecodable body invalid_argument on connect-node's path too, saying what was expected", async () => {
    server = await startTestServer();
    const { baseUrl } = server;
    const ADMISSION = `/${OpsService.typeName}/GetAdmission`;
    const garbage = Buffer.from([0xff, 0xff, 0xff]);
    const post = (path: string, type: string, body: Buffer | string, headers = {}) =>
      fetch(baseUrl + path, {
        method: "POST",
        headers: { "content-type": type, ...headers },
        body,
      });
    /** The status a gRPC-Web answer ends with (its trailer frame). */
    const grpcWebStatus = async (res: Response) => {
      const trailer = envelopes(Buffer.from(await res.arrayBuffer())).find((e) => e.flags & 0x80);
      const fields = new Map(
        (trailer?.data.toString() ?? "")
          .split("\r\n")
          .filter((l) => l !== "")
          .map((l) => [l.slice(0, l.indexOf(":")), l.slice(l.indexOf(":") + 1).trim()]),
      );
      return {
        code: Number(fields.get("grpc-status")),
        message: decodeURIComponent(fields.get("grpc-message") ?? ""),
      };
    };
    /** The error a Connect stream ends with. */
    const connectEnd = async (res: Response) =>
      JSON.parse(
        envelopes(Buffer.from(await res.arrayBuffer()))
          .at(-1)
          ?.data.toString() ?? "",
      ).error as { code: string; message: string };
    const expected = (type: string) =>
      new RegExp(`expected a binary-encoded fermilink\\.runner\\.v1\\.${type}`);

    // Connect unary, binary (connect-node said `internal`: "parse binary: premature EOF").
    const unary = await post(ADMISSION, "application/proto", garbage);
    expect(unary.status).toBe(400);
    const unaryError = (await unary.json()) as { code: string; message: string };
    expect(unaryError.code).toBe("invalid_argument");
    expect(unaryError.message).toMatch(expected("GetAdmissionRequest"));
    // Connect unary, gzip-compressed.
    const gzipped = await post(ADMISSION, "application/proto", gzipSync(garbage), {
      "content-encoding": "gzip",
    });
    expect([gzipped.status, ((await gzipped.json()) as { code: string }).code]).toEqual([
      400,
      "invalid_argument",
    ]);
    // Connect JSON, malformed (connect-node already said invalid_argument; it still does).
    const json = await post(
      `/${OpsService.typeName}/GetConcurrency`,
      "application/json",
      "{not json",
    );
    expect(json.status).toBe(400);
    expect(((await json.json()) as { code: string }).code).toBe("invalid_argument");
    const streamJson = await post(
      RUN,
      "application/connect+json",
      envelope(0, Buffer.from("{nope")),
    );
    expect((await connectEnd(streamJson)).code).toBe("invalid_argument");
    // Connect streaming, compressed: connect-node's path (the direct one takes no compression).
    const streamGzip = await post(
      RUN,
      "application/connect+proto",
      envelope(1, gzipSync(garbage)),
      {
        "connect-content-encoding": "gzip",
      },
    );
    const streamGzipError = await connectEnd(streamGzip);
    expect(streamGzipError.code).toBe("invalid_argument");
    expect(streamGzipError.message).toMatch(expected("RunRequest"));
    // gRPC-Web: garbage bytes, a message that is no request, on a stream and a unary method.
    const raw = await post(
      RUN,
      "application/grpc-web+proto",
      Buffer.from([1, 2, 3, 4, 5, 6, 7, 8, 9]),
    );
    expect(await grpcWebStatus(raw)).toMatchObject({ code: Code.InvalidArgument });
    for (const [path, type] of [
      [RUN, "RunRequest"],
      [ADMISSION, "GetAdmissionRequest"],
    ] as const) {
      const res = await post(path, "application/grpc-web+proto", envelope(0, garbage));
      const status = await grpcWebStatus(res);
      expect(status.code).toBe(Code.InvalidArgument);
      expect(status.message).toMatch(expected(type));
    }
    // gRPC with a deadline (connect-node's path) and the direct path say the same.
    for (const headers of [{ "grpc-timeout": "10S" }, {}]) {
      const grpc = await rawGrpc(baseUrl, RUN, envelope(0, garbage), headers);
      expect(grpc.trailers["grpc-status"]).toBe(String(Code.InvalidArgument));
      expect(decodeURIComponent(String(grpc.trailers["grpc-message"]))).toMatch(
        expected("RunRequest"),
      );
    }
    // Good calls on the guarded path still work, compressed or not.
    const ops = createClient(OpsService, createGrpcWebTransport({ baseUrl, httpVersion: "1.1" }));
    expect((await ops.getAdmission({ sessionId: "s" })).userKey).toBe("session:s");
    const gz = createClient(
      OpsService,
      createConnectTransport({ baseUrl, httpVersion: "1.1", sendCompression: compressionGzip }),
    );
    expect((await gz.getAdmission({ sessionId: "t".repeat(5000) })).userKey).toMatch(
      /^session:t+$/,
    );
    expect(server.app.pipeline.liveRuns).toBe(0);
  });

  it("answers a request larger than 1 MiB with resource_exhausted on both protocols", async () => {
    server = await startTestServer();
    const big = envelope(0, Buffer.alloc(2 * 1024 * 1024, 0x41));
    const grpc = await rawGrpc(server.baseUrl, RUN, big);
    expect(grpc.trailers["grpc-status"]).toBe(String(Code.ResourceExhausted));
    const connect = await rawConnect(server.baseUrl, RUN, big);
    const end = JSON.parse(connect.envelopes.at(-1)?.data.toString() ?? "");
    expect(end.error.code).toBe("resource_exhausted");
    // On HTTP/2 the trailers arrive, then the stream is reset (NO_ERROR): an upload the server
    // stopped reading ends there instead of hanging on a flow-control window never reopened.
    const h2 = await h2Upload(
      server.baseUrl,
      { ":path": RUN, "content-type": "application/grpc", te: "trailers" },
      2 * 1024 * 1024,
    );
    expect(h2.trailers["grpc-status"]).toBe(String(Code.ResourceExhausted));
    expect({ closed: h2.closed, rstCode: h2.rstCode }).toEqual({ closed: true, rstCode: 0 });
    expect(server.app.pipeline.liveRuns).toBe(0);
  });

  it("counts only events written to a live stream: none more once the client has reset it", async () => {
    server = await startTestServer();
    const s = server;
    const runId = (await runOverGrpc(s, "gone", "#scenario=lines-5000"))[0]?.runId ?? "";
    const streamed = () => streamedEvents(s, "connect");
    const before = await streamed();
    // A client that grants no flow-control window: the replay (batches of hundreds of events,
    // written ~30 at a time) soon waits for a write the socket cannot drain.
    const session = http2.connect(s.baseUrl, { settings: { initialWindowSize: 0 } });
    try {
      const call = session.request({
        ":method": "POST",
        ":path": ATTACH,
        "content-type": "application/grpc",
        te: "trailers",
      });
      call.on("error", () => {});
      await new Promise<void>((resolve, reject) => {
        call.on("response", () => resolve());
        call.on("close", () => reject(new Error("the call closed before its response head")));
        call.end(attachBody(runId));
      });
      // Until the counter has moved and then stopped: the server is stuck in a write. A loaded
      // box may take longer than a few samples to start the replay, or pause inside it.
      let held = await streamed();
      for (let i = 0, still = 0; i < 100 && still < 3; i++) {
        await new Promise((r) => setTimeout(r, 100));
        const now = await streamed();
        still = now === held && now > before ? still + 1 : 0;
        held = now;
      }
      // What the stream took is counted, far from all 5,000 lines.
      expect(held - before).toBeGreaterThan(0);
      expect(held - before).toBeLessThan(1000);
      call.close(http2.constants.NGHTTP2_CANCEL);
      await new Promise((r) => call.on("close", r));
      // The events gathered for the write that found the client gone are not counted.
      await new Promise((r) => setTimeout(r, 500));
      expect(await streamed()).toBe(held);
    } finally {
      session.destroy();
    }
  });

  it("takes a client that resets its call mid-upload as gone, logging no error", async () => {
    const lines: string[] = [];
    const log = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(String(chunk));
        done();
      },
    });
    server = await startTestServer({}, { logger: createLogger("warn", log) });
    const session = http2.connect(server.baseUrl);
    try {
      const calls = Array.from({ length: 20 }, () => {
        const call = session.request({
          ":method": "POST",
          ":path": RUN,
          "content-type": "application/grpc",
          te: "trailers",
        });
        call.on("error", () => {});
        // The request's message, and no end of stream: the body is still being read.
        call.write(envelope(0, new Uint8Array(0)));
        setImmediate(() => call.close(http2.constants.NGHTTP2_CANCEL));
        return call;
      });
      await Promise.all(calls.map((c) => new Promise((r) => c.on("close", r))));
      // The server sees each reset at once; what it logged for them followed within a tick.
      await new Promise((r) => setTimeout(r, 500));
    } finally {
      session.destroy();
    }
    expect(lines.filter((l) => l.includes("RunService call failed"))).toEqual([]);
    expect(server.app.pipeline.liveRuns).toBe(0);
  });

  it("maps a runner error to its code with a readable message (gRPC)", async () => {
    server = await startTestServer();
    const client = createClient(RunService, createGrpcTransport({ baseUrl: server.baseUrl }));
    const err = await collect(client.run({ sessionId: "../escape", userPrompt: "hi" })).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.InvalidArgument);
    expect((err as ConnectError).rawMessage).toMatch(/session/i);
  });
});
