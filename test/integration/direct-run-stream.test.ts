/**
 * RunService.Run / Attach over protobuf gRPC and the Connect streaming
 * protocol are written by the runner itself (src/transport/connect/
 * direct-run-stream.ts); JSON, gRPC-Web, compression and deadlines go through
 * connect-node. These tests hold the two paths to the same messages and
 * check the direct path's own protocol handling with raw requests.
 */
import http2 from "node:http2";
import { create, fromBinary, toBinary, toJson } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import {
  compressionGzip,
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import {
  AttachRequestSchema,
  type RunEvent,
  RunEventSchema,
  RunService,
} from "../../gen/fermilink/runner/v1/run_pb.js";
import { writeBuffersAllocated } from "../../src/transport/connect/direct-run-stream.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";

let server: TestServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

async function collect(stream: AsyncIterable<RunEvent>): Promise<RunEvent[]> {
  const out: RunEvent[] = [];
  for await (const ev of stream) out.push(ev);
  return out;
}

const json = (events: RunEvent[]) => events.map((e) => toJson(RunEventSchema, e));

const ATTACH = `/${RunService.typeName}/Attach`;
const RUN = `/${RunService.typeName}/Run`;

function envelope(flags: number, message: Uint8Array): Buffer {
  const out = Buffer.alloc(5 + message.length);
  out[0] = flags;
  out.writeUInt32BE(message.length, 1);
  out.set(message, 5);
  return out;
}

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

  it("answers a request larger than 1 MiB with resource_exhausted on both protocols", async () => {
    server = await startTestServer();
    const big = envelope(0, Buffer.alloc(2 * 1024 * 1024, 0x41));
    const grpc = await rawGrpc(server.baseUrl, RUN, big);
    expect(grpc.trailers["grpc-status"]).toBe(String(Code.ResourceExhausted));
    const connect = await rawConnect(server.baseUrl, RUN, big);
    const end = JSON.parse(connect.envelopes.at(-1)?.data.toString() ?? "");
    expect(end.error.code).toBe("resource_exhausted");
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
