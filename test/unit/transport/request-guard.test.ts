import { create, toBinary } from "@bufbuild/protobuf";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  type GetAdmissionRequest,
  GetAdmissionRequestSchema,
} from "../../../gen/fermilink/runner/v1/ops_pb.js";
import { guardRequestBody } from "../../../src/transport/connect/request-guard.js";

afterEach(() => {
  vi.restoreAllMocks();
});

function envelope(message: Uint8Array): Buffer {
  const out = Buffer.alloc(5 + message.length);
  out.writeUInt32BE(message.length, 1);
  out.set(message, 5);
  return out;
}

async function* inChunks(bytes: Buffer, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
}

async function collect(body: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const out: Uint8Array[] = [];
  for await (const c of body) out.push(c);
  return Buffer.concat(out);
}

const GRPC_WEB = new Headers({ "content-type": "application/grpc-web+proto" });

describe("guardRequestBody (envelope protocols)", () => {
  it("refuses no message or two for a method that takes one, and counts only when told the kind", async () => {
    const one = envelope(toBinary(GetAdmissionRequestSchema, create(GetAdmissionRequestSchema)));
    const guard = (body: Buffer, kind?: "unary" | "server_streaming" | "bidi_streaming") =>
      collect(
        guardRequestBody(inChunks(body, 3), GRPC_WEB, GetAdmissionRequestSchema, 1 << 20, kind),
      );
    for (const kind of ["unary", "server_streaming"] as const) {
      const words = kind.replace("_", "-");
      await expect(guard(Buffer.alloc(0), kind)).rejects.toThrow(
        `[invalid_argument] protocol error: missing input message for ${words} method`,
      );
      await expect(guard(Buffer.concat([one, one]), kind)).rejects.toThrow(
        `[invalid_argument] protocol error: received extra input message for ${words} method`,
      );
      expect((await guard(one, kind)).equals(one)).toBe(true);
    }
    // A streaming request, or no kind named: any number passes, for connect-node to judge.
    for (const kind of ["bidi_streaming", undefined] as const) {
      expect((await guard(Buffer.alloc(0), kind)).length).toBe(0);
      expect((await guard(Buffer.concat([one, one]), kind)).length).toBe(2 * one.length);
    }
  });

  it("copies a message sent in tiny chunks about once, not once per chunk", async () => {
    const message = toBinary(
      GetAdmissionRequestSchema,
      create(GetAdmissionRequestSchema, { userId: "u".repeat(256 * 1024) }),
    );
    const body = Buffer.concat([envelope(message), envelope(message)]);
    let copied = 0;
    const concat = Buffer.concat;
    vi.spyOn(Buffer, "concat").mockImplementation((list, total) => {
      const out = concat(list, total);
      copied += out.length;
      return out;
    });
    // 64-byte chunks: joining the pending bytes on every chunk copied ~270 MB here.
    const out = await collect(
      guardRequestBody(inChunks(body, 64), GRPC_WEB, GetAdmissionRequestSchema),
    );
    vi.restoreAllMocks();
    expect(out.equals(body)).toBe(true);
    expect(copied).toBeLessThan(3 * body.length);
  });

  it("passes messages through unchanged however the body is cut, and keeps a cut envelope", async () => {
    const msg = (userId: string): GetAdmissionRequest =>
      create(GetAdmissionRequestSchema, { userId });
    const body = Buffer.concat(
      ["a", "bb", "", "c".repeat(300)].map((u) =>
        envelope(toBinary(GetAdmissionRequestSchema, msg(u))),
      ),
    );
    for (const size of [1, 2, 5, 6, 7, 100, body.length]) {
      const out = await collect(
        guardRequestBody(inChunks(body, size), GRPC_WEB, GetAdmissionRequestSchema),
      );
      expect(out.equals(body)).toBe(true);
      const cut = body.subarray(0, body.length - 3);
      const outCut = await collect(
        guardRequestBody(inChunks(cut, size), GRPC_WEB, GetAdmissionRequestSchema),
      );
      expect(outCut.equals(cut)).toBe(true);
    }
  });

  it("still refuses an undecodable message split across chunks", async () => {
    const body = envelope(Buffer.from([0xff, 0xff, 0xff, 0xff]));
    await expect(
      collect(guardRequestBody(inChunks(body, 2), GRPC_WEB, GetAdmissionRequestSchema)),
    ).rejects.toThrow(/expected a binary-encoded fermilink\.runner\.v1\.GetAdmissionRequest/);
  });

  it("passes the sound messages before an undecodable one in the same chunk, then refuses it", async () => {
    const one = envelope(
      toBinary(GetAdmissionRequestSchema, create(GetAdmissionRequestSchema, { userId: "u" })),
    );
    const bad = envelope(Buffer.from([0xff, 0xff, 0xff, 0xff]));
    const passed: Uint8Array[] = [];
    const guard = guardRequestBody(
      inChunks(Buffer.concat([one, one, bad]), 1 << 20),
      GRPC_WEB,
      GetAdmissionRequestSchema,
      1 << 20,
      "bidi_streaming",
    );
    await expect(
      (async () => {
        for await (const c of guard) passed.push(c);
      })(),
    ).rejects.toThrow(/expected a binary-encoded/);
    // A streaming handler answers these before the stream ends with the error.
    expect(Buffer.concat(passed).equals(Buffer.concat([one, one]))).toBe(true);
  });

  it("calls a body cut short under a prefix over the limit an incomplete envelope, as the direct path does", async () => {
    // The prefix claims 256 MiB; the body ends after 3 bytes.
    const body = Buffer.from([0, 0x10, 0, 0, 0, 1, 2, 3]);
    await expect(
      collect(guardRequestBody(inChunks(body, 3), GRPC_WEB, GetAdmissionRequestSchema)),
    ).rejects.toThrow(/incomplete envelope/);
  });
});
