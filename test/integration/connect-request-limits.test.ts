import { gzipSync } from "node:zlib";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { OpsService } from "../../gen/fermilink/runner/v1/ops_pb.js";
import { AttachRequestSchema, RunService } from "../../gen/fermilink/runner/v1/run_pb.js";
import { envelope } from "../helpers/envelope.js";
import { h2Upload } from "../helpers/h2-upload.js";
import { expectContinue } from "../helpers/raw-http.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";

let server: TestServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

const ADMISSION = `/${OpsService.typeName}/GetAdmission`;
const RUN = `/${RunService.typeName}/Run`;

/** The status a gRPC-Web answer ends with (its trailer frame). */
function grpcWebStatus(body: Buffer): { code: number; message: string } {
  for (let i = 0; i < body.length; ) {
    const len = body.readUInt32BE(i + 1);
    if ((body[i] ?? 0) & 0x80) {
      const text = body.subarray(i + 5, i + 5 + len).toString();
      const field = (name: string) => new RegExp(`^${name}: ?(.*)$`, "m").exec(text)?.[1]?.trim();
      return {
        code: Number(field("grpc-status")),
        message: decodeURIComponent(field("grpc-message") ?? ""),
      };
    }
    i += 5 + len;
  }
  throw new Error("no trailer frame");
}

describe("request messages on connect-node's path are bounded as on the direct path (1 MiB)", () => {
  it("refuses a larger message resource_exhausted (not `internal`, never buffered whole)", async () => {
    server = await startTestServer();
    // Undecodable and over the limit: the guard leaves it to connect-node, which must refuse it.
    const big = Buffer.concat([Buffer.from([0xff, 0xff, 0xff]), Buffer.alloc(2 * 1024 * 1024)]);
    const grpcWeb = await fetch(server.baseUrl + ADMISSION, {
      method: "POST",
      headers: { "content-type": "application/grpc-web+proto" },
      body: envelope(0, big),
    });
    expect(grpcWebStatus(Buffer.from(await grpcWeb.arrayBuffer()))).toMatchObject({
      code: Code.ResourceExhausted,
      message: expect.stringMatching(/larger than configured readMaxBytes 1048576/),
    });
    const unary = await fetch(server.baseUrl + ADMISSION, {
      method: "POST",
      headers: { "content-type": "application/proto" },
      body: big,
    });
    expect(unary.status).toBe(429);
    expect(((await unary.json()) as { code: string }).code).toBe("resource_exhausted");
  });

  it("refuses a compressed message that inflates past the limit (a gzip bomb is not inflated)", async () => {
    server = await startTestServer();
    // 64 MiB of zeros, ~64 KB gzipped: connect-node's default bound (4 GiB) inflated all of it.
    const bomb = gzipSync(Buffer.alloc(64 * 1024 * 1024));
    expect(bomb.length).toBeLessThan(1024 * 1024);
    const unary = await fetch(server.baseUrl + ADMISSION, {
      method: "POST",
      headers: { "content-type": "application/proto", "content-encoding": "gzip" },
      body: bomb,
    });
    expect(((await unary.json()) as { code: string }).code).toBe("resource_exhausted");
    const stream = await fetch(server.baseUrl + RUN, {
      method: "POST",
      headers: { "content-type": "application/grpc-web+proto", "grpc-encoding": "gzip" },
      body: envelope(1, bomb),
    });
    expect(grpcWebStatus(Buffer.from(await stream.arrayBuffer())).code).toBe(
      Code.ResourceExhausted,
    );
    expect(server.app.pipeline.liveRuns).toBe(0);
  });

  it("ends an h2 upload it stopped reading: the answer, then the stream reset with NO_ERROR", async () => {
    server = await startTestServer();
    // A deadline sends gRPC to connect-node's path; the spaces read as a 538 MB message.
    const res = await h2Upload(
      server.baseUrl,
      { ":path": RUN, "content-type": "application/grpc", te: "trailers", "grpc-timeout": "10S" },
      2 * 1024 * 1024,
    );
    expect(res.status).toBe(200);
    expect(res.trailers["grpc-status"]).toBe(String(Code.ResourceExhausted));
    expect(res.closed).toBe(true);
    expect(res.rstCode).toBe(0);
  });

  it("answers a Connect or gRPC-Web unary call expecting 100-continue with a Content-Length over the limit at once, never inviting the body", async () => {
    const s = await startTestServer();
    server = s;
    const over = await expectContinue(
      s.app.port,
      ADMISSION,
      "application/json",
      Buffer.alloc(2 * 1024 * 1024, " "),
    );
    expect(over.text).not.toContain("100 Continue");
    expect(over.text.split("\r\n", 1)[0]).toBe("HTTP/1.1 429 Too Many Requests");
    expect(JSON.parse(over.text.slice(over.text.indexOf("\r\n\r\n") + 4))).toEqual({
      code: "resource_exhausted",
      message: `message size ${2 * 1024 * 1024} is larger than configured readMaxBytes 1048576`,
    });
    // The body may still come after a refusal without 100 Continue: the connection ends.
    expect(over.closed).toBe(true);
    // gRPC-Web (one envelope: the message past its 5-byte prefix): refused unread as well.
    const grpcWeb = await expectContinue(
      s.app.port,
      ADMISSION,
      "application/grpc-web+proto",
      envelope(0, Buffer.alloc(2 * 1024 * 1024)),
    );
    expect(grpcWeb.text).not.toContain("100 Continue");
    expect(grpcWeb.text.split("\r\n", 1)[0]).toBe("HTTP/1.1 200 OK");
    expect(grpcWeb.text).toContain(`grpc-status: ${Code.ResourceExhausted}`);
    expect(grpcWeb.text).toContain(
      `grpc-message: ${encodeURIComponent(`message size ${2 * 1024 * 1024} is larger than configured readMaxBytes 1048576`)}`,
    );
    expect(grpcWeb.closed).toBe(true);
    // Within the limit the body is still invited, read and answered.
    const within = await expectContinue(
      s.app.port,
      ADMISSION,
      "application/proto",
      Buffer.alloc(0),
    );
    expect(within.text.startsWith("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")).toBe(true);
  });

  it("invites the body of a streaming call only when it reads it: a small one is read and served, one declared over the limit is refused unread", async () => {
    const s = await startTestServer();
    server = s;
    const ATTACH = `/${RunService.typeName}/Attach`;
    const unknownRun = JSON.stringify({ runId: "no-such-run" });
    const final = (text: string) => text.slice(text.indexOf("\r\n\r\n") + 4);
    // connect-node's path (JSON), then the direct path (protobuf): the body is invited and read.
    const json = await expectContinue(
      s.app.port,
      ATTACH,
      "application/connect+json",
      envelope(0, Buffer.from(unknownRun)),
    );
    expect(json.continued).toBe(true);
    expect(final(json.text).split("\r\n", 1)[0]).toBe("HTTP/1.1 200 OK");
    expect(json.text).toContain('"code":"not_found"');
    const proto = await expectContinue(
      s.app.port,
      ATTACH,
      "application/connect+proto",
      envelope(
        0,
        toBinary(AttachRequestSchema, create(AttachRequestSchema, { runId: "no-such-run" })),
      ),
    );
    expect(proto.continued).toBe(true);
    expect(proto.text).toContain('"code":"not_found"');
    // One message declared over the limit, on either path and in gRPC-Web: refused at once, unread.
    for (const type of [
      "application/connect+json",
      "application/connect+proto",
      "application/grpc-web+proto",
    ]) {
      const over = await expectContinue(
        s.app.port,
        ATTACH,
        type,
        envelope(0, Buffer.alloc(2 * 1024 * 1024, 0x20)),
      );
      expect({ type, continued: over.continued, closed: over.closed }).toEqual({
        type,
        continued: false,
        closed: true,
      });
      expect(over.text.split("\r\n", 1)[0]).toBe("HTTP/1.1 200 OK");
      expect(over.text).toContain(
        type.startsWith("application/grpc-web")
          ? `grpc-status: ${Code.ResourceExhausted}`
          : '"code":"resource_exhausted"',
      );
    }
  });

  it("never invites the body of a call it answers by its headers alone", async () => {
    const s = await startTestServer();
    server = s;
    // grpc-web-text (connect-node takes binary only: 415) and a procedure not served (unimplemented).
    const text = await expectContinue(
      s.app.port,
      ADMISSION,
      "application/grpc-web-text",
      Buffer.from("AAAAAAA="),
    );
    expect(text.text.split("\r\n", 1)[0]).toBe("HTTP/1.1 415 Unsupported Media Type");
    expect({ continued: text.continued, closed: text.closed }).toEqual({
      continued: false,
      closed: true,
    });
    const unknown = await expectContinue(
      s.app.port,
      `/${OpsService.typeName}/NoSuchMethod`,
      "application/grpc-web+proto",
      envelope(0, Buffer.alloc(0)),
    );
    expect(unknown.text).toContain(`grpc-status: ${Code.Unimplemented}\r\n`);
    expect({ continued: unknown.continued, closed: unknown.closed }).toEqual({
      continued: false,
      closed: true,
    });
  });
});
