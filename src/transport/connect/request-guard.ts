/**
 * The request side of every call connect-node serves (Connect unary and
 * streaming, gRPC, gRPC-Web; compressed or not): each protobuf request
 * message is decoded once before connect-node parses it, so a body that does
 * not decode is the caller's mistake, `invalid_argument` with a message that
 * says what was expected, as on the direct path (direct-run-stream.ts).
 * connect-node itself reports a binary message it cannot parse as `internal`
 * ("parse binary: ..."), and it parses before any interceptor runs, so the
 * check sits on the request body instead: messages pass through unchanged
 * once they decoded, one envelope at a time (a bidi stream is never held).
 * JSON messages are decoded here too, only so that the error connect-node
 * would give (`invalid_argument`, protobuf-es's words) goes out bounded
 * (undecodableJson).
 */

import type { DescMethod } from "@bufbuild/protobuf";
import { type DescMessage, fromBinary, fromJsonString } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { compressionBrotli, compressionGzip } from "@connectrpc/connect-node";
import { quotedInput } from "../../errors/runner-error.js";

/**
 * A request message is a prompt of at most 10,000 code points plus a few ids:
 * the direct path refuses more; here, larger messages go unchecked.
 */
export const MAX_REQUEST_BYTES = 1024 * 1024;

const DECOMPRESSORS = new Map([
  [compressionGzip.name, compressionGzip],
  [compressionBrotli.name, compressionBrotli],
]);

type MethodKind = DescMethod["methodKind"];

/** The envelope flag of a compressed message (all three protocols). */
const COMPRESSED = 0b1;

/** The error for a request message that does not decode as `schema`. */
export function undecodableRequest(schema: DescMessage, err: unknown): ConnectError {
  const why = err instanceof Error ? err.message : String(err);
  return new ConnectError(
    `cannot decode the request message: ${why} (expected a binary-encoded ${schema.typeName})`,
    Code.InvalidArgument,
  );
}

/**
 * The most of a JSON decode error a status repeats: protobuf-es quotes the
 * refused value whole. Percent-encoded in `grpc-message` (up to 9 bytes a
 * character), this stays within the 8 KiB of metadata grpcio takes.
 */
const JSON_ERROR_MAX_CHARS = 400;

/** Lone surrogates (a JSON `"\ud800"`): `u` mode matches a surrogate only outside a pair. */
const LONE_SURROGATE = /[\ud800-\udfff]/gu;

/**
 * A request message that is not JSON of its type, in connect-node's words,
 * the refused value cut and made well-formed: connect-node put protobuf-es's
 * message as it was into `grpc-message`, where a value near 1 MiB made a
 * header gRPC clients refuse (the call ended without its status), and a lone
 * surrogate made encodeURIComponent throw, so the call never ended at all.
 */
export function undecodableJson(err: unknown): ConnectError {
  const why = err instanceof Error ? err.message : String(err);
  return new ConnectError(
    quotedInput(why.replace(LONE_SURROGATE, "\ufffd"), JSON_ERROR_MAX_CHARS),
    Code.InvalidArgument,
  );
}

/** How a request carries its message, from its content type; null: nothing to check here. */
function framing(
  header: Headers,
): { kind: "whole" | "envelopes"; encodingHeader: string; json: boolean } | null {
  const type = (header.get("content-type") ?? "").split(";", 1)[0]?.trim().toLowerCase() ?? "";
  const json = type.endsWith("json");
  if (type === "application/proto" || type === "application/json") {
    return { kind: "whole", encodingHeader: "content-encoding", json };
  }
  if (type === "application/connect+proto" || type === "application/connect+json") {
    return { kind: "envelopes", encodingHeader: "connect-content-encoding", json };
  }
  if (/^application\/grpc(-web)?(\+proto|\+json)?$/.test(type)) {
    return { kind: "envelopes", encodingHeader: "grpc-encoding", json };
  }
  return null;
}

/**
 * `body` with each request message checked against `schema`: a message that
 * does not decode ends the body with an `invalid_argument` ConnectError,
 * which connect-node answers in the call's protocol. Anything this does not
 * judge (an unknown encoding, a truncated envelope, a message over `limit`,
 * which is then neither held nor decoded twice) passes through for
 * connect-node to take or refuse as it does.
 */
export function guardRequestBody(
  body: AsyncIterable<Uint8Array>,
  header: Headers,
  schema: DescMessage,
  limit = MAX_REQUEST_BYTES,
  /** The method's kind: a unary or server-streaming one takes exactly one message. */
  methodKind?: MethodKind,
): AsyncIterable<Uint8Array> {
  const how = framing(header);
  if (how === null) return body;
  const named = header.get(how.encodingHeader);
  const encoding = named === null || named === "identity" ? null : named;
  const decompressor = encoding === null ? null : DECOMPRESSORS.get(encoding);
  // An encoding the server does not take: connect-node answers `unimplemented` before reading.
  if (decompressor === undefined) return body;
  const check = async (bytes: Uint8Array, compressed: boolean): Promise<void> => {
    let message = bytes;
    if (compressed) {
      if (decompressor === null) {
        throw new ConnectError(
          `protocol error: received a compressed message without an encoding (set ${how.encodingHeader})`,
          Code.InvalidArgument,
        );
      }
      try {
        message = await decompressor.decompress(bytes, limit);
      } catch (err) {
        // Larger than the limit once inflated: connect-node reads it under its own bound.
        if (err instanceof ConnectError && err.code === Code.ResourceExhausted) return;
        throw err;
      }
    }
    if (how.json) {
      try {
        // As connect-node reads it (serialization.ts: non-fatal UTF-8, unknown fields ignored).
        fromJsonString(schema, new TextDecoder().decode(message), { ignoreUnknownFields: true });
      } catch (err) {
        throw undecodableJson(err);
      }
      return;
    }
    try {
      fromBinary(schema, message);
    } catch (err) {
      throw undecodableRequest(schema, err);
    }
  };
  if (how.kind === "whole") {
    return guardWhole(body, limit, (bytes) => check(bytes, decompressor !== null));
  }
  const one = methodKind === "unary" || methodKind === "server_streaming";
  return guardEnvelopes(body, limit, check, one ? methodKind.replace("_", "-") : null);
}

/** The rest of an iterator, as is. */
async function* rest(it: AsyncIterator<Uint8Array>): AsyncGenerator<Uint8Array> {
  for (let r = await it.next(); !r.done; r = await it.next()) yield r.value;
}

/**
 * Hold the body's chunks in `held` (`seen` bytes of it already counted) until
 * it ends: returns the bytes held. Once more than `limit` bytes came, passes
 * what it held and the rest through unread and returns null: connect-node
 * refuses such a message (resource_exhausted, its readMaxBytes), so there is
 * nothing to decode.
 */
async function* holdUnlessOver(
  held: Uint8Array[],
  seen: number,
  it: AsyncIterator<Uint8Array>,
  limit: number,
): AsyncGenerator<Uint8Array, number | null> {
  for (let r = await it.next(); !r.done; r = await it.next()) {
    held.push(r.value);
    seen += r.value.byteLength;
    if (seen > limit) {
      yield* held;
      yield* rest(it);
      return null;
    }
  }
  return seen;
}

/** Connect unary: the body is the message (compressed as a whole by Content-Encoding). */
async function* guardWhole(
  body: AsyncIterable<Uint8Array>,
  limit: number,
  check: (bytes: Uint8Array) => Promise<void>,
): AsyncGenerator<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const size = yield* holdUnlessOver(chunks, 0, body[Symbol.asyncIterator](), limit);
  if (size === null) return;
  const bytes = Buffer.concat(chunks, size);
  await check(bytes);
  yield bytes;
}

/**
 * The rest of a body whose next envelope says its message is over `limit`
 * (`seen` of its bytes are in `pending`). connect-node refuses it unread
 * (resource_exhausted, its readMaxBytes) once more than `limit` bytes came,
 * as the direct path does; a body that ends before is a cut envelope there
 * (invalid_argument), so it is here too, whatever its prefix claims.
 */
async function* overLimit(
  pending: Buffer,
  seen: number,
  it: AsyncIterator<Uint8Array>,
  limit: number,
): AsyncGenerator<Uint8Array> {
  if ((yield* holdUnlessOver([pending], seen, it, limit)) === null) return;
  throw new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument);
}

/**
 * The envelope protocols: a 5-byte prefix (flags, big-endian length) per message.
 * Chunks are gathered until the next prefix or the whole next message is
 * there, then joined once: a message that arrives in many small chunks (a
 * DATA frame or an HTTP/1.1 chunk can be a few bytes) costs one copy, not one
 * per chunk (joining on every chunk was quadratic: minutes of CPU for a
 * 1 MiB message sent 8 bytes at a time).
 */
async function* guardEnvelopes(
  body: AsyncIterable<Uint8Array>,
  limit: number,
  check: (bytes: Uint8Array, compressed: boolean) => Promise<void>,
  /** The method kind ("unary", "server-streaming") when the call takes exactly one message. */
  one: string | null,
): AsyncGenerator<Uint8Array> {
  const it = body[Symbol.asyncIterator]();
  let parts: Uint8Array[] = [];
  let size = 0;
  let messages = 0;
  /** Bytes needed before the next look: a prefix, then its whole message. */
  let want = 5;
  for (let r = await it.next(); !r.done; r = await it.next()) {
    parts.push(r.value);
    size += r.value.byteLength;
    if (size < want) continue;
    const pending = Buffer.concat(parts, size);
    let done = 0;
    want = 5;
    while (pending.length - done >= 5) {
      const flags = pending[done] ?? 0;
      const length = pending.readUInt32BE(done + 1);
      if (length > limit) {
        yield* overLimit(pending, pending.length - done, it, limit);
        return;
      }
      if (pending.length - done < 5 + length) {
        want = 5 + length;
        break;
      }
      // Only plain and compressed messages are the caller's; other flags are left to connect-node.
      if ((flags & ~COMPRESSED) === 0) {
        if (one !== null && ++messages > 1) throw extraMessage(one);
        try {
          await check(pending.subarray(done + 5, done + 5 + length), flags === COMPRESSED);
        } catch (err) {
          // The messages before it in this chunk were sound: a streaming call (reflection)
          // answers them before ending with this error, as it does when they come apart.
          if (done > 0) yield pending.subarray(0, done);
          throw err;
        }
      }
      done += 5 + length;
    }
    if (done > 0) yield pending.subarray(0, done);
    const left = pending.subarray(done);
    parts = left.length > 0 ? [left] : [];
    size = left.length;
  }
  // A truncated envelope: connect-node says "incomplete envelope" (invalid_argument).
  if (size > 0) yield Buffer.concat(parts, size);
  else if (one !== null && messages === 0) throw missingMessage(one);
}

/*
 * A call that takes one message and got none, or more: connect-node answers
 * these `unimplemented`, the direct path (direct-run-stream.ts) `invalid_argument`
 * in the same words; the caller's mistake either way.
 */
const missingMessage = (kind: string) =>
  new ConnectError(
    `protocol error: missing input message for ${kind} method`,
    Code.InvalidArgument,
  );
const extraMessage = (kind: string) =>
  new ConnectError(
    `protocol error: received extra input message for ${kind} method`,
    Code.InvalidArgument,
  );
