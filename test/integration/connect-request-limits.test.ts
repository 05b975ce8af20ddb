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
});
