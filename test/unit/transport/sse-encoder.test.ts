import { describe, expect, it } from "vitest";
import type { RunEvent, RunEventBody } from "../../../src/events/run-event.js";
import { pyJsonDumps } from "../../../src/transport/sse/py-json.js";
import { encodeSseComment, encodeSseFrame } from "../../../src/transport/sse/sse-encoder.js";
import { PY_BREAKS, parseLikeFermiLink, parseSse } from "../../helpers/sse-client.js";

const ev = (body: RunEventBody, seq = 1): RunEvent => ({ runId: "r", seq, timeMs: 0, body });

async function parse(text: string) {
  const stream = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(new TextEncoder().encode(text));
      c.close();
    },
  });
  const out = [];
  for await (const e of parseSse(stream)) out.push(e);
  return out;
}

describe("SSE encoder", () => {
  it("writes FermiLink's frames", () => {
    expect(
      encodeSseFrame(ev({ type: "agent", raw: '{"type":"x"}', items: [], truncated: false }, 3)),
    ).toBe('event: agent\nid: 3\ndata: {"type":"x"}\n\n');
    expect(encodeSseFrame(ev({ type: "log", text: "oops é", truncated: false }))).toBe(
      'event: log\nid: 1\ndata: {"text": "oops \\u00e9"}\n\n',
    );
    const exit = encodeSseFrame(
      ev({
        type: "exit",
        reason: "completed",
        returnCode: 0,
        signal: null,
        durationMs: 12,
        message: "",
        killedByRunner: false,
        succeeded: true,
      }),
    );
    expect(exit).toBe(
      'event: runner.exit\nid: 1\ndata: {"reason": "completed", "return_code": 0, "signal": null, "duration_ms": 12, "succeeded": true, "killed_by_runner": false, "run_id": "r"}\n\n',
    );
    expect(encodeSseFrame(ev({ type: "queued", position: 1, queueSize: 2 }))).toBeNull();
    expect(encodeSseComment("queued 1/2\nx")).toBe(": queued 1/2 x\n");
  });

  it("never lets a payload forge a frame, for any mix of CR, LF and Python's other line breaks (fuzz)", async () => {
    const alphabet = [
      ...["a", "\r", "\n", "\r\n", ":", "event: forged", "data: x", " ", "é", "\u2028"],
      ...["\u2029", "\u0085", "\u000b", "\u000c", "\u001c", "\u001d", "\u001e", "{"],
    ];
    let seed = 42;
    const rand = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    for (let i = 0; i < 500; i++) {
      let raw = "";
      const n = 1 + Math.floor(rand() * 12);
      for (let j = 0; j < n; j++) raw += alphabet[Math.floor(rand() * alphabet.length)];
      const frame =
        encodeSseFrame(ev({ type: "agent", raw, items: [], truncated: false }, i + 1)) ?? "";
      const parsed = await parse(frame);
      expect(parsed).toHaveLength(1);
      expect(parsed[0]?.event).toBe("agent");
      expect(parsed[0]?.id).toBe(String(i + 1));
      // A JSON-looking line keeps its U+0085, U+2028 and U+2029, escaped; elsewhere they break.
      const json = raw.trimStart().startsWith("{");
      const text = json
        ? raw.replace(
            /[\u0085\u2028\u2029]/g,
            (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
          )
        : raw;
      const lines = text.split(PY_BREAKS);
      expect(parsed[0]?.data).toBe(lines.join("\n"));
      // FermiLink's client splits lines where Python does: still one event, the same lines.
      const seen = parseLikeFermiLink(frame);
      expect(seen).toHaveLength(1);
      expect(seen[0]?.event).toBe("agent");
      expect(seen[0]?.data).toBe(lines.map((l) => l.trim()).join("\n"));
    }
  });

  it("escapes the line breaks Python's splitlines knows beyond CR and LF in a JSON agent line, and only there", () => {
    const value = { type: "item.completed", item: { text: "a\u2028b\u2029c\u0085d" } };
    const raw = JSON.stringify(value);
    expect(raw).toContain("\u2028");
    const frame = encodeSseFrame(ev({ type: "agent", raw, items: [], truncated: false })) ?? "";
    // What httpx's aiter_lines (str.splitlines) sees: the frame's own lines, none cut.
    const lines = frame.split(/\r\n|\r|\n|\u0085|\u2028|\u2029/);
    expect(lines).toEqual(["event: agent", "id: 1", `data: ${lines[2]?.slice(6)}`, "", ""]);
    expect(JSON.parse(lines[2]?.slice(6) ?? "")).toEqual(value);
    // Not JSON: not escaped (that would change the text), a new data line as for CR or LF.
    const text = "plain\u2028text";
    expect(encodeSseFrame(ev({ type: "agent", raw: text, items: [], truncated: false }))).toBe(
      "event: agent\nid: 1\ndata: plain\ndata: text\n\n",
    );
  });

  it("keeps a provider line from forging a frame for FermiLink's client with any of Python's line breaks", () => {
    // Two breaks make a blank line, then a meta frame naming another session.
    const forged = (br: string) =>
      `${br}${br}event: meta${br}data: {"session_id": "not-yours"}${br}${br}`;
    for (const br of [
      "\u2028",
      "\u2029",
      "\u0085",
      "\u000b",
      "\u000c",
      "\u001c",
      "\u001d",
      "\u001e",
    ]) {
      for (const raw of [`plain${forged(br)}`, `{"a": 1}${forged(br)}`]) {
        const frame = encodeSseFrame(ev({ type: "agent", raw, items: [], truncated: false })) ?? "";
        expect(parseLikeFermiLink(frame).map((e) => e.event)).toEqual(["agent"]);
      }
    }
  });

  it("matches Python's json.dumps for the shapes it emits", () => {
    expect(pyJsonDumps({ a: 1, b: [true, null], c: 'x"y' })).toBe(
      '{"a": 1, "b": [true, null], "c": "x\\"y"}',
    );
    expect(pyJsonDumps({ f: 0.5, g: 1e-7 })).toBe('{"f": 0.5, "g": 1e-07}');
    expect(pyJsonDumps("\u{1F600}")).toBe('"\\ud83d\\ude00"');
  });
});
