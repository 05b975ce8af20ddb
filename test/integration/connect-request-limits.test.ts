import net from "node:net";
import { gzipSync } from "node:zlib";
import { Code } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { OpsService } from "../../gen/fermilink/runner/v1/ops_pb.js";
import { RunService } from "../../gen/fermilink/runner/v1/run_pb.js";
import { envelope } from "../helpers/envelope.js";
import { h2Upload } from "../helpers/h2-upload.js";
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

  /**
   * An HTTP/1.1 call that asks `Expect: 100-continue`: its body is sent only once the server
   * says `100 Continue`. What came back, and whether the server closed the connection.
   */
  const expectContinue = (port: number, path: string, type: string, body: Buffer) =>
    new Promise<{ text: string; closed: boolean }>((resolve) => {
      let text = "";
      const socket = net.connect(port, "127.0.0.1", () => {
        socket.write(
          `POST ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: ${type}\r\n` +
            `Content-Length: ${body.length}\r\nExpect: 100-continue\r\n\r\n`,
        );
      });
      const done = (closed: boolean) => {
        clearTimeout(wait);
        socket.destroy();
        resolve({ text, closed });
      };
      // A server that invited the body waits for it: no answer then.
      const wait = setTimeout(() => done(false), 3000);
      socket.on("data", (d: Buffer) => {
        const before = text;
        text += d.toString("latin1");
        if (
          !before.startsWith("HTTP/1.1 100 Continue") &&
          text.startsWith("HTTP/1.1 100 Continue")
        ) {
          socket.write(body);
        }
      });
      socket.on("error", () => {});
      socket.on("close", () => done(true));
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
});
