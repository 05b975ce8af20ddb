/**
 * The protobuf bytes of a `RunEvent` for the two events of the hot path
 * (`agent` and `log`: one per provider line), written directly instead of
 * building message objects for protobuf-es to encode. Profiling the Connect
 * face showed the generic path spending more time on message objects and on
 * its writer growing from 128 bytes per message than on the bytes
 * themselves. The output is exactly what `toBinary(RunEventSchema,
 * runEventToProto(e))` gives (fields in number order, proto3 defaults
 * omitted); test/unit/events/run-event-wire.test.ts holds it to that.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import {
  type RunEvent as ProtoRunEvent,
  RunEventSchema,
} from "../../gen/fermilink/runner/v1/run_pb.js";
import type { AgentItem, ItemStatus, RunEvent } from "./run-event.js";
import { runEventToProto } from "./to-proto.js";

const STATUS: Record<ItemStatus, number> = {
  in_progress: 1,
  completed: 2,
  failed: 3,
  declined: 4,
};

const VARINT = 0;
const FIXED64 = 1;
const LEN = 2;

/** What a writer starts with, and keeps between events. */
const WRITER_BYTES = 4096;
/**
 * A writer that grew past this for a long line goes back to `WRITER_BYTES`
 * once its bytes are taken: one 8 MB line would otherwise leave each stream
 * that carried it holding a 32 MB buffer until the stream ends.
 */
const WRITER_KEEP_BYTES = 64 * 1024;

/** Texts longer than this (UTF-16 units) are measured before they are written. */
const LONG_TEXT = 16 * 1024;

/** A byte buffer that grows by doubling, reused from one event to the next. */
class Writer {
  buf = Buffer.allocUnsafe(WRITER_BYTES);
  pos = 0;

  /** Start afresh, and let a buffer grown for a long line go. */
  reset(): void {
    this.pos = 0;
    if (this.buf.length > WRITER_KEEP_BYTES) this.buf = Buffer.allocUnsafe(WRITER_BYTES);
  }

  /** Make sure `n` more bytes fit. */
  room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  varint(v: number): void {
    // Arithmetic, not 32-bit shifts: values go up to 2^53. Anything else is refused, as
    // toBinary refuses it (Infinity would never leave the loop below).
    if (!(Number.isSafeInteger(v) && v >= 0)) {
      // Past 2^53 a uint64 still holds it, and toBinary writes it.
      if (Number.isInteger(v) && v > 0 && v < 2 ** 64) {
        this.bigVarint(BigInt(v));
        return;
      }
      throw new RangeError(`cannot encode ${v} as a varint`);
    }
    this.room(10);
    while (v >= 0x80) {
      this.buf[this.pos++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[this.pos++] = v;
  }

  /** A varint of up to 64 bits (the rare values past 2^53, or negative int64s as two's complement). */
  bigVarint(v: bigint): void {
    this.room(10);
    let u = BigInt.asUintN(64, v);
    while (u >= 0x80n) {
      this.buf[this.pos++] = Number(u & 0x7fn) | 0x80;
      u >>= 7n;
    }
    this.buf[this.pos++] = Number(u);
  }

  tag(field: number, wire: number): void {
    this.varint(field * 8 + wire);
  }

  /** A string field, left out when empty (proto3 default). */
  str(field: number, s: string): void {
    if (s === "") return;
    this.tag(field, LEN);
    // Length first as the worst case's varint width, then fixed up: one pass over the text.
    // A long text is measured first instead, so the buffer grows by what it takes, not 3×.
    const most = s.length > LONG_TEXT ? Buffer.byteLength(s, "utf8") : s.length * 3;
    this.room(5 + most);
    const lenAt = this.pos;
    const width = varintWidth(most);
    this.pos += width;
    const written = this.buf.write(s, this.pos, "utf8");
    this.pos += written;
    this.fixLength(lenAt, width, written);
  }

  /** A varint field (bool, enum, unsigned), left out when zero unless `always`. */
  num(field: number, v: number, always = false): void {
    if (v === 0 && !always) return;
    this.tag(field, VARINT);
    this.varint(v);
  }

  /** A signed int32 (`optional int32`): negative values take ten bytes, as protobuf does. */
  int32(field: number, v: number): void {
    if (!(Number.isInteger(v) && v >= -0x80000000 && v <= 0x7fffffff)) {
      throw new RangeError(`cannot encode ${v} as an int32`);
    }
    this.tag(field, VARINT);
    if (v >= 0) {
      this.varint(v);
      return;
    }
    this.room(10);
    let lo = v >>> 0;
    for (let i = 0; i < 4; i++) {
      this.buf[this.pos++] = (lo & 0x7f) | 0x80;
      lo >>>= 7;
    }
    // Bits 28..31 of the low word, then the sign-extended high word (all ones).
    this.buf[this.pos++] = (lo & 0x0f) | 0x70 | 0x80;
    for (let i = 0; i < 4; i++) this.buf[this.pos++] = 0xff;
    this.buf[this.pos++] = 0x01;
  }

  double(field: number, v: number): void {
    this.tag(field, FIXED64);
    this.room(8);
    this.buf.writeDoubleLE(v, this.pos);
    this.pos += 8;
  }

  /** A set message field (written even when empty): `body` writes its fields, then the length is fixed up. */
  message(field: number, body: () => void): void {
    this.tag(field, LEN);
    this.room(5);
    const lenAt = this.pos;
    this.pos += 1; // most nested messages are under 128 bytes
    const start = this.pos;
    body();
    this.fixLength(lenAt, 1, this.pos - start);
  }

  /** Write `len` as the varint at `at`, where `reserved` bytes were left, moving the body if needed. */
  private fixLength(at: number, reserved: number, len: number): void {
    const width = varintWidth(len);
    if (width !== reserved) {
      this.room(width - reserved);
      this.buf.copy(this.buf, at + width, at + reserved, this.pos);
      this.pos += width - reserved;
    }
    let v = len;
    let p = at;
    while (v >= 0x80) {
      this.buf[p++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[p] = v;
  }
}

function varintWidth(v: number): number {
  let n = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 0x80);
    n++;
  }
  return n;
}

const tokens = (n: number) => Math.max(0, Math.trunc(n));

function writeItem(w: Writer, item: AgentItem): void {
  switch (item.kind) {
    case "message":
      w.message(1, () => {
        w.str(1, item.text);
        w.num(2, item.delta ? 1 : 0);
      });
      return;
    case "reasoning":
      w.message(2, () => w.str(1, item.text));
      return;
    case "command":
      w.message(3, () => {
        w.str(1, item.id);
        w.str(2, item.command);
        w.str(3, item.output);
        if (item.exitCode !== null && item.exitCode !== undefined) w.int32(4, item.exitCode);
        w.num(5, item.status ? STATUS[item.status] : 0);
      });
      return;
    case "file_change":
      w.message(4, () => {
        w.str(1, item.id);
        for (const c of item.changes) {
          w.message(2, () => {
            w.str(1, c.path);
            w.str(2, c.kind);
          });
        }
        w.num(3, item.status ? STATUS[item.status] : 0);
      });
      return;
    case "tool_call":
      w.message(5, () => {
        w.str(1, item.id);
        w.str(2, item.name);
        w.str(3, item.inputJson);
        w.str(4, item.output);
        w.num(5, item.status ? STATUS[item.status] : 0);
      });
      return;
    case "usage":
      w.message(6, () => {
        w.num(1, tokens(item.inputTokens));
        w.num(2, tokens(item.cachedInputTokens));
        w.num(3, tokens(item.outputTokens));
        w.num(4, tokens(item.reasoningTokens));
        if (item.costUsd !== null && item.costUsd !== undefined) w.double(5, item.costUsd);
        w.num(6, tokens(item.cacheWriteInputTokens));
      });
      return;
    case "error":
      w.message(7, () => {
        w.str(1, item.message);
        w.num(2, item.retryable ? 1 : 0);
        w.num(3, item.fatal ? 1 : 0);
      });
      return;
    case "result":
      w.message(8, () => {
        w.num(1, item.success ? 1 : 0);
        w.str(2, item.text);
      });
      return;
  }
}

/** Write an `agent` or `log` event's message at the writer's position; false (nothing written) for other kinds. */
function writeLineEvent(w: Writer, event: RunEvent): boolean {
  const b = event.body;
  if (b.type !== "agent" && b.type !== "log") return false;
  w.str(1, event.runId);
  w.num(2, event.seq);
  const seconds = Math.floor(event.timeMs / 1000);
  const nanos = (event.timeMs - seconds * 1000) * 1_000_000;
  w.message(3, () => {
    if (seconds < 0) {
      // Before 1970: Timestamp.seconds is an int64, ten bytes when negative (as toBinary writes it).
      if (!Number.isSafeInteger(seconds))
        throw new RangeError(`cannot encode ${seconds} as an int64`);
      w.tag(1, VARINT);
      w.bigVarint(BigInt(seconds));
    } else w.num(1, seconds);
    w.num(2, nanos);
  });
  if (b.type === "agent") {
    w.message(12, () => {
      w.str(1, b.raw);
      for (const item of b.items) w.message(2, () => writeItem(w, item));
      w.num(3, b.truncated ? 1 : 0);
    });
  } else {
    w.message(13, () => {
      w.str(1, b.text);
      w.num(2, b.truncated ? 1 : 0);
    });
  }
  return true;
}

const writer = new Writer();

/**
 * The encoded `RunEvent` of an `agent` or `log` event, or null for the other
 * (rare) kinds, which take the generic path. The result is a fresh copy.
 */
export function encodeLineEvent(event: RunEvent): Uint8Array | null {
  writer.pos = 0;
  if (!writeLineEvent(writer, event)) return null;
  const bytes = Uint8Array.prototype.slice.call(writer.buf, 0, writer.pos);
  writer.reset();
  return bytes;
}

/**
 * One stream's outgoing bytes: each event as a gRPC / Connect envelope (a
 * flag byte, the message length as 4 bytes big-endian, the message), so one
 * socket write carries many events. Each stream has its own: a write may
 * wait, and the bytes gathered must survive it.
 */
export class EnvelopeBuffer {
  private readonly w = new Writer();

  /** Bytes gathered since the last `take()`. */
  get size(): number {
    return this.w.pos;
  }

  /** One event as a data envelope (flag 0). */
  add(event: RunEvent): void {
    const w = this.w;
    w.room(5);
    const at = w.pos;
    w.pos += 5;
    try {
      if (!writeLineEvent(w, event)) this.raw(toBinary(RunEventSchema, runEventToProto(event)));
    } catch (err) {
      // Nothing of an event that cannot be encoded stays among the gathered bytes.
      w.pos = at;
      throw err;
    }
    w.buf[at] = 0;
    w.buf.writeUInt32BE(w.pos - at - 5, at + 1);
  }

  /** A whole envelope with the given flags (the Connect protocol's end-of-stream message is flag 2). */
  frame(flags: number, data: Uint8Array): void {
    const w = this.w;
    w.room(5);
    w.buf[w.pos] = flags;
    w.buf.writeUInt32BE(data.length, w.pos + 1);
    w.pos += 5;
    this.raw(data);
  }

  /**
   * The gathered bytes, and a fresh start. A copy (the gathering buffer is
   * reused): into the start of `into` when they fit, else a new buffer.
   */
  take(into?: Buffer): Buffer {
    const n = this.w.pos;
    const out =
      into !== undefined && into.length >= n ? into.subarray(0, n) : Buffer.allocUnsafe(n);
    this.w.buf.copy(out, 0, 0, n);
    this.w.reset();
    return out;
  }

  /** Bytes the gathering buffer holds (tests: it shrinks back after a long line). */
  get capacity(): number {
    return this.w.buf.length;
  }

  private raw(data: Uint8Array): void {
    this.w.room(data.length);
    this.w.buf.set(data, this.w.pos);
    this.w.pos += data.length;
  }
}

/**
 * The `RunEvent` message for a binary codec (protobuf: Connect, gRPC,
 * gRPC-Web): `agent` and `log` events carry their bytes from
 * `encodeLineEvent` as the message's unknown fields, which protobuf-es
 * writes out verbatim (the message itself has no field set), so the wire
 * bytes are the same as the generic path's. Never for JSON: JSON has no
 * unknown fields.
 */
export function runEventToBinaryProto(event: RunEvent): ProtoRunEvent {
  const bytes = encodeLineEvent(event);
  if (bytes === null) return runEventToProto(event);
  // The first field's tag, then the rest of the message as that field's data.
  let tag = 0;
  let shift = 1;
  let i = 0;
  for (;;) {
    const byte = bytes[i++] ?? 0;
    tag += (byte & 0x7f) * shift;
    if (byte < 0x80) break;
    shift *= 0x80;
  }
  const message = create(RunEventSchema);
  message.$unknown = [{ no: Math.floor(tag / 8), wireType: tag % 8, data: bytes.subarray(i) }];
  return message;
}
