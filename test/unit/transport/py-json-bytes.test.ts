import { describe, expect, it } from "vitest";
import { RunnerError } from "../../../src/errors/runner-error.js";
import { parseRunBody } from "../../../src/transport/sse/parse-run-body.js";
import { jsonParseWithPyConstants } from "../../../src/transport/sse/py-json.js";
import {
  PyUnicodeDecodeError,
  pyDecodeJsonBytes,
  pyDetectEncoding,
} from "../../../src/transport/sse/py-json-bytes.js";

const PROMPT = '{"user_prompt": "h\u00e9\u{1F600}"}';

function utf16(text: string, bigEndian: boolean): Buffer {
  const b = Buffer.from(text, "utf16le");
  return bigEndian ? b.swap16() : b;
}

function utf32(text: string, bigEndian: boolean): Buffer {
  const cps = [...text].map((c) => c.codePointAt(0) as number);
  const b = Buffer.alloc(cps.length * 4);
  cps.forEach((cp, i) => {
    if (bigEndian) b.writeUInt32BE(cp, i * 4);
    else b.writeUInt32LE(cp, i * 4);
  });
  return b;
}

const bytes = (...parts: (Buffer | number[])[]) =>
  Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p))));

/** What `json.loads(bytes)` makes of a body: its value, a JSON error, or a decode error. */
function loads(b: Buffer): unknown {
  try {
    return { ok: parseRunBody(b) };
  } catch (err) {
    if (err instanceof RunnerError && err.code === "BODY_UNREADABLE") return "400";
    const details = (err as { details?: { type: string; loc: unknown[]; ctx?: unknown }[] })
      .details;
    return details?.map((d) => [d.type, d.loc, d.ctx]);
  }
}

describe("json.loads of bytes (json.detect_encoding, surrogatepass)", () => {
  // Each case as CPython 3.11's json.loads(bytes) answers it (printed by python3).
  it.each([
    ["UTF-8 with a BOM", bytes([0xef, 0xbb, 0xbf], Buffer.from(PROMPT))],
    ["UTF-16 with a little-endian BOM", bytes([0xff, 0xfe], utf16(PROMPT, false))],
    ["UTF-16 with a big-endian BOM", bytes([0xfe, 0xff], utf16(PROMPT, true))],
    ["UTF-16-LE without a BOM", utf16(PROMPT, false)],
    ["UTF-16-BE without a BOM", utf16(PROMPT, true)],
    ["UTF-32 with a little-endian BOM", bytes([0xff, 0xfe, 0, 0], utf32(PROMPT, false))],
    ["UTF-32 with a big-endian BOM", bytes([0, 0, 0xfe, 0xff], utf32(PROMPT, true))],
    ["UTF-32-LE without a BOM", utf32(PROMPT, false)],
    ["UTF-32-BE without a BOM", utf32(PROMPT, true)],
  ])("reads %s", (_, body) => {
    expect(loads(body)).toEqual({ ok: { user_prompt: "h\u00e9\u{1F600}" } });
  });

  it("refuses what Python's codecs refuse (FastAPI's 400)", () => {
    for (const body of [
      bytes(utf16(PROMPT, false), [0x20]), // odd length: truncated data
      bytes(utf32(PROMPT, false), [0x20, 0]), // truncated data
      bytes(utf32("{", false), [0, 0, 0x11, 0], utf32("}", false)), // above U+10FFFF
      Buffer.from([0x5b, 0x22, 0xed, 0xa0]), // a surrogate cut short
      Buffer.from([0x7b, 0xff, 0x7d]), // not UTF-8
      Buffer.from([0x22, 0xc0, 0x80, 0x22]), // overlong
      Buffer.from([0x22, 0xf4, 0x90, 0x80, 0x80, 0x22]), // past U+10FFFF
    ]) {
      expect(loads(body)).toBe("400");
    }
  });

  it("keeps surrogates as lone code units, as surrogatepass does", () => {
    const lone = (b: Buffer) => pyDecodeJsonBytes(b);
    expect(lone(Buffer.from([0x22, 0xed, 0xa0, 0x80, 0x22]))).toBe('"\ud800"');
    expect(lone(Buffer.from([0x22, 0xed, 0xa0, 0x80, 0xef, 0xbb, 0xbf, 0x22]))).toBe(
      '"\ud800\ufeff"',
    );
    expect(lone(bytes(utf16('["', false), [0x00, 0xd8], utf16('"]', false)))).toBe('["\ud800"]');
    expect(lone(bytes(utf32('["', false), [0x00, 0xd8, 0, 0], utf32('"]', false)))).toBe(
      '["\ud800"]',
    );
    expect(
      lone(Buffer.from([0x22, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98, 0x80, 0xed, 0x9f, 0xbf])),
    ).toBe('"\u20ac\u{1F600}\ud7ff');
  });

  it("locates a JSON error in the decoded text, and drops one BOM only", () => {
    expect(loads(utf16('{"a" 1}', false))).toEqual([
      ["json_invalid", ["body", 5], { error: "Expecting ':' delimiter" }],
    ]);
    expect(loads(utf32('{"a\u{1F600}" 1}', true))).toEqual([
      ["json_invalid", ["body", 6], { error: "Expecting ':' delimiter" }],
    ]);
    for (const body of [
      Buffer.from([0xff, 0xfe]),
      Buffer.from([0xef, 0xbb, 0xbf]),
      Buffer.from([0xef, 0xbb, 0xbf, 0xef, 0xbb, 0xbf, 0x7b, 0x7d]),
      Buffer.from([0xff, 0xfe, 0xff, 0xfe, 0x7b, 0, 0x7d, 0]),
    ]) {
      expect(loads(body)).toEqual([["json_invalid", ["body", 0], { error: "Expecting value" }]]);
    }
  });

  it("picks the codec by the zero bytes of the first four, as detect_encoding does", () => {
    const cases: [number[], string][] = [
      [[0x31, 0], "utf-16-le"],
      [[0, 0x31], "utf-16-be"],
      [[0x31, 0, 0], "utf-8"],
      [[0x31, 0, 0, 0], "utf-32-le"],
      [[0x31, 0, 0, 0x31], "utf-16-le"],
      [[0, 0, 0, 0x31], "utf-32-be"],
      [[0xff, 0xfe, 0, 0], "utf-32"],
      [[0xff, 0xfe, 0x31, 0], "utf-16"],
      [[0x7b, 0x7d], "utf-8"],
    ];
    for (const [b, enc] of cases) expect([b, pyDetectEncoding(Buffer.from(b))]).toEqual([b, enc]);
    expect(pyDecodeJsonBytes(Buffer.from([0x31, 0, 0, 0]))).toBe("1");
    expect(() => pyDecodeJsonBytes(Buffer.from([0x31, 0, 0]))).not.toThrow();
    expect(() => pyDecodeJsonBytes(Buffer.from([0x31, 0, 0x31]))).not.toThrow();
    expect(() => pyDecodeJsonBytes(Buffer.from([0, 0x31, 0]))).not.toThrow(PyUnicodeDecodeError);
  });

  it("reads NaN and Infinity in UTF-16 as well", () => {
    const body = utf16('{"user_prompt": "x", "a": NaN, "b": -Infinity}', false);
    expect(loads(body)).toEqual({ ok: { user_prompt: "x" } });
  });
});

describe("jsonParseWithPyConstants (Python's NaN and Infinity at any size)", () => {
  it("reads them where Python does, to their values", () => {
    expect(
      jsonParseWithPyConstants('{"a": [NaN, Infinity, -Infinity], "NaN": "Infinity"}'),
    ).toEqual({
      a: [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY],
      NaN: "Infinity",
    });
    expect(jsonParseWithPyConstants('{"a\\"NaN": NaN}')).toEqual({ 'a"NaN': Number.NaN });
    // A string or key that spells what stands in for NaN stays what it is.
    expect(jsonParseWithPyConstants('["\\u0000", NaN]')).toEqual(["\u0000", Number.NaN]);
    expect(jsonParseWithPyConstants('{"\\u0000": NaN, "__proto__": [NaN]}')).toEqual({
      "\u0000": Number.NaN,
      ["__proto__"]: [Number.NaN],
    });
    expect(jsonParseWithPyConstants("NaN")).toBeNaN();
    const deep = jsonParseWithPyConstants(`${"[".repeat(100_000)}NaN${"]".repeat(100_000)}`);
    expect(Array.isArray(deep)).toBe(true);
  });

  it("refuses what Python refuses, even where a replacement could join its neighbours", () => {
    for (const text of [
      "[1Infinity]",
      "[Infinity5]",
      "[-NaN]",
      "[- Infinity]",
      "[NaNa]",
      "[1e-Infinity]",
      '{"a": 1,}',
      "[NaN,]",
      "{NaN: 1}",
      '{"a": 1, NaN: 2}',
      '{"\\u0000": 1, NaN: 2}',
      '"NaN',
    ]) {
      expect([text, jsonParseWithPyConstants(text)]).toEqual([text, undefined]);
    }
  });
});
