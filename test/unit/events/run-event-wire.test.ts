/**
 * The hand-written protobuf bytes of `agent` and `log` events must be exactly
 * protobuf-es's for the same event: every line of every golden transcript
 * (all four providers' items), plus edge cases the transcripts lack.
 */
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { fromBinary, toBinary, toJson } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { RunEventSchema } from "../../../gen/fermilink/runner/v1/run_pb.js";
import { PROVIDER_IDS } from "../../../src/config/providers.js";
import type { AgentItem, RunEvent } from "../../../src/events/run-event.js";
import {
  EnvelopeBuffer,
  encodeLineEvent,
  runEventToBinaryProto,
} from "../../../src/events/run-event-wire.js";
import { runEventToProto } from "../../../src/events/to-proto.js";
import { getProviderAdapter } from "../../../src/providers/registry.js";

const TRANSCRIPTS = fileURLToPath(new URL("../../fixtures/transcripts/", import.meta.url));
const RUN_ID = "3f2c9a7e-1b4d-4e8f-9a0b-c1d2e3f4a5b6";

function transcriptEvents(): RunEvent[] {
  const events: RunEvent[] = [];
  let seq = 0;
  for (const provider of PROVIDER_IDS) {
    const adapter = getProviderAdapter(provider);
    const dir = path.join(TRANSCRIPTS, provider);
    for (const c of readdirSync(dir, { withFileTypes: true }).filter((d) => d.isDirectory())) {
      const text = readFileSync(path.join(dir, c.name, "stdout.jsonl"), "utf8");
      for (const raw of text.split("\n").filter((l) => l !== "")) {
        seq += 1;
        events.push({
          runId: RUN_ID,
          seq,
          timeMs: 1_764_000_000_000 + seq * 7,
          body: { type: "agent", raw, items: adapter.normalize(raw), truncated: false },
        });
      }
    }
  }
  return events;
}

const item = (i: AgentItem): RunEvent => ({
  runId: RUN_ID,
  seq: 2 ** 40 + 3,
  timeMs: 1_764_000_000_123,
  body: { type: "agent", raw: "{}", items: [i], truncated: true },
});

const edgeCases: RunEvent[] = [
  { runId: RUN_ID, seq: 1, timeMs: 0, body: { type: "log", text: "", truncated: false } },
  {
    runId: RUN_ID,
    seq: 127,
    timeMs: 999,
    body: { type: "log", text: "stderr é ✓ 𝄞 line", truncated: true },
  },
  {
    runId: RUN_ID,
    seq: 128,
    timeMs: 1_764_000_000_001,
    body: { type: "agent", raw: "x".repeat(70_000), items: [], truncated: false },
  },
  {
    runId: RUN_ID,
    seq: 16_384,
    timeMs: 1_764_000_000_001,
    body: {
      type: "agent",
      raw: "ü".repeat(5_000),
      items: [{ kind: "message", text: "é".repeat(200), delta: true }],
      truncated: false,
    },
  },
  item({ kind: "message", text: "", delta: false }),
  item({ kind: "reasoning", text: "thinking" }),
  item({ kind: "command", id: "c1", command: "ls", output: "", exitCode: -1, status: "failed" }),
  item({ kind: "command", id: "c2", command: "", output: "o", exitCode: 0, status: null }),
  item({ kind: "command", id: "", command: "x", output: "", exitCode: null, status: "declined" }),
  item({
    kind: "command",
    id: "c3",
    command: "y",
    output: "",
    exitCode: -2147483648,
    status: null,
  }),
  item({ kind: "command", id: "c4", command: "z", output: "", exitCode: 255, status: "completed" }),
  item({
    kind: "file_change",
    id: "f",
    changes: [
      { path: "a.txt", kind: "add" },
      { path: "", kind: "" },
    ],
    status: "in_progress",
  }),
  item({ kind: "file_change", id: "", changes: [], status: null }),
  item({
    kind: "tool_call",
    id: "t",
    name: "n",
    inputJson: "{}",
    output: "o",
    status: "completed",
  }),
  item({
    kind: "usage",
    inputTokens: 2 ** 40,
    cachedInputTokens: 0,
    outputTokens: 12.7,
    reasoningTokens: -5,
    costUsd: 0,
    cacheWriteInputTokens: 7,
  }),
  item({
    kind: "usage",
    inputTokens: 1,
    cachedInputTokens: 2,
    outputTokens: 3,
    reasoningTokens: 4,
    costUsd: null,
    cacheWriteInputTokens: 0,
  }),
  item({
    kind: "usage",
    inputTokens: 0,
    cachedInputTokens: 0,
    outputTokens: 0,
    reasoningTokens: 0,
    costUsd: 0.0123,
    cacheWriteInputTokens: 0,
  }),
  item({ kind: "error", message: "boom", retryable: true, fatal: false }),
  item({ kind: "error", message: "", retryable: false, fatal: true }),
  item({ kind: "result", success: true, text: "" }),
  item({ kind: "result", success: false, text: "done" }),
  // Before 1970: a negative int64 of seconds (ten bytes) and nanos counted forward from it.
  ...[-1, -1500, -999, -31_536_000_000].map(
    (timeMs): RunEvent => ({
      runId: RUN_ID,
      seq: 3,
      timeMs,
      body: { type: "log", text: "early", truncated: false },
    }),
  ),
  // Past 2^53 a uint64 still holds a value: toBinary writes it, and so must this.
  { runId: RUN_ID, seq: 2 ** 53, timeMs: 1, body: { type: "log", text: "", truncated: false } },
  item({
    kind: "usage",
    inputTokens: 2 ** 53,
    cachedInputTokens: 1e19,
    outputTokens: 2 ** 64 - 2048,
    reasoningTokens: 2 ** 53 + 2,
    costUsd: null,
    cacheWriteInputTokens: 2 ** 53 + 4,
  }),
];

describe("hand-encoded line events", () => {
  const events = [...transcriptEvents(), ...edgeCases];

  it("covers every item kind the golden transcripts produce", () => {
    const kinds = new Set(
      events.flatMap((e) => (e.body.type === "agent" ? e.body.items.map((i) => i.kind) : [])),
    );
    expect([...kinds].sort()).toEqual(
      [
        "command",
        "error",
        "file_change",
        "message",
        "reasoning",
        "result",
        "tool_call",
        "usage",
      ].sort(),
    );
    expect(events.length).toBeGreaterThan(100);
  });

  it("writes exactly protobuf-es's bytes for each event", () => {
    for (const e of events) {
      const expected = toBinary(RunEventSchema, runEventToProto(e));
      expect(Buffer.from(encodeLineEvent(e) ?? [])).toEqual(Buffer.from(expected));
      // As the Connect handler yields it: the bytes travel as unknown fields of an empty message.
      expect(Buffer.from(toBinary(RunEventSchema, runEventToBinaryProto(e)))).toEqual(
        Buffer.from(expected),
      );
      expect(toJson(RunEventSchema, fromBinary(RunEventSchema, expected))).toEqual(
        toJson(RunEventSchema, runEventToProto(e)),
      );
    }
  });

  it("leaves the other events to the generic path", () => {
    const exit: RunEvent = {
      runId: RUN_ID,
      seq: 9,
      timeMs: 5,
      body: {
        type: "exit",
        reason: "completed",
        returnCode: 0,
        signal: null,
        durationMs: 10,
        message: "",
        killedByRunner: false,
        succeeded: true,
      },
    };
    expect(encodeLineEvent(exit)).toBeNull();
    expect(runEventToBinaryProto(exit).event.case).toBe("exit");
  });
});

describe("values no field can hold", () => {
  const command = (exitCode: number) =>
    item({ kind: "command", id: "c", command: "", output: "", exitCode, status: "failed" });

  it("are refused as toBinary refuses them, never looped over", () => {
    for (const bad of [Number.POSITIVE_INFINITY, 2 ** 31, -(2 ** 31) - 1, 1.5, Number.NaN]) {
      expect(() => toBinary(RunEventSchema, runEventToProto(command(bad)))).toThrow();
      expect(() => encodeLineEvent(command(bad))).toThrow(RangeError);
    }
    const usage = item({
      kind: "usage",
      inputTokens: Number.POSITIVE_INFINITY,
      cachedInputTokens: 0,
      outputTokens: 0,
      reasoningTokens: 0,
      costUsd: null,
      cacheWriteInputTokens: 0,
    });
    expect(() => encodeLineEvent(usage)).toThrow(RangeError);
    const beyondUint64 = item({
      kind: "usage",
      inputTokens: 2 ** 64,
      cachedInputTokens: 0,
      outputTokens: 0,
      reasoningTokens: 0,
      costUsd: null,
      cacheWriteInputTokens: 0,
    });
    expect(() => toBinary(RunEventSchema, runEventToProto(beyondUint64))).toThrow();
    expect(() => encodeLineEvent(beyondUint64)).toThrow(RangeError);
  });

  it("leave nothing behind in a stream's gathered bytes", () => {
    const b = new EnvelopeBuffer();
    const good = command(1);
    b.add(good);
    const size = b.size;
    expect(() => b.add(command(Number.POSITIVE_INFINITY))).toThrow(RangeError);
    expect(b.size).toBe(size);
    const one = new EnvelopeBuffer();
    one.add(good);
    expect(b.take()).toEqual(one.take());
  });

  it("never reach the encoder from a Claude line: an exit code beyond int32 is none", () => {
    const claude = getProviderAdapter("claude");
    const line = (code: string) =>
      JSON.stringify({
        type: "user",
        message: {
          role: "user",
          content: [
            {
              type: "tool_result",
              tool_use_id: "toolu_1",
              is_error: true,
              content: `Exit code ${code}\nboom`,
            },
          ],
        },
        tool_use_result: "Error: Exit code",
      });
    const exitCodes = (code: string) =>
      claude.normalize(line(code)).map((i) => (i.kind === "command" ? i.exitCode : "other"));
    expect(exitCodes("2")).toEqual([2]);
    for (const code of ["2147483648", "9".repeat(400)]) {
      expect(exitCodes(code)).toEqual([null]);
      const e: RunEvent = {
        ...item({ kind: "message", text: "", delta: false }),
        body: {
          type: "agent",
          raw: line(code),
          items: claude.normalize(line(code)),
          truncated: false,
        },
      };
      expect(Buffer.from(encodeLineEvent(e) ?? [])).toEqual(
        Buffer.from(toBinary(RunEventSchema, runEventToProto(e))),
      );
    }
  });
});

describe("EnvelopeBuffer.take", () => {
  const events = transcriptEvents().slice(0, 20);
  const gathered = () => {
    const b = new EnvelopeBuffer();
    for (const e of events) b.add(e);
    return b;
  };
  const expected = gathered().take();

  it("copies the envelopes into the given buffer when they fit, and starts afresh", () => {
    const b = gathered();
    const into = Buffer.alloc(expected.length + 100, 0xaa);
    const out = b.take(into);
    expect(out.buffer).toBe(into.buffer);
    expect(out.byteOffset).toBe(into.byteOffset);
    expect(out).toEqual(expected);
    expect(b.size).toBe(0);
    // The next gathering starts at the buffer's start again.
    b.add(events[0] as RunEvent);
    const one = new EnvelopeBuffer();
    one.add(events[0] as RunEvent);
    expect(b.take(into)).toEqual(one.take());
  });

  it("makes a buffer of its own when they do not fit", () => {
    const into = Buffer.alloc(expected.length - 1);
    const out = gathered().take(into);
    expect(out.buffer).not.toBe(into.buffer);
    expect(out).toEqual(expected);
  });

  it("lets a buffer grown for a long line go once its bytes are taken", () => {
    const b = new EnvelopeBuffer();
    const long: RunEvent = {
      runId: RUN_ID,
      seq: 1,
      timeMs: 1,
      body: { type: "agent", raw: "x".repeat(4 * 1024 * 1024), items: [], truncated: true },
    };
    b.add(long);
    // Measured, not reserved at three bytes per character: 4 MB fits in 8 MB, not 16.
    expect(b.capacity).toBeLessThanOrEqual(8 * 1024 * 1024);
    const out = b.take();
    expect(fromBinary(RunEventSchema, out.subarray(5)).event.value).toMatchObject({
      raw: (long.body as { raw: string }).raw,
    });
    expect(b.capacity).toBeLessThanOrEqual(64 * 1024);
    b.add(events[0] as RunEvent);
    const one = new EnvelopeBuffer();
    one.add(events[0] as RunEvent);
    expect(b.take()).toEqual(one.take());
  });
});
