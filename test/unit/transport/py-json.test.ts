import { describe, expect, it } from "vitest";
import { PyJsonDecodeError, pyJsonLoads } from "../../../src/transport/sse/py-json.js";

/**
 * [text, msg, pos] as CPython 3.11's `json.loads` raises them (printed by
 * python3 from `json.JSONDecodeError`); Python counts `pos` in code points.
 * 3.11 and 3.12 give these for a trailing comma too; 3.13 words it itself.
 */
const CPYTHON_311: [string, string, number][] = [
  ["", "Expecting value", 0],
  ["   ", "Expecting value", 3],
  ["{not json", "Expecting property name enclosed in double quotes", 1],
  ['{"a":1,}', "Expecting property name enclosed in double quotes", 7],
  ["[1,]", "Expecting value", 3],
  ['"\\x"', "Invalid \\escape", 1],
  ['"\\u12"', "Invalid \\uXXXX escape", 2],
  ['"\\u12x4"', "Invalid \\uXXXX escape", 2],
  ['"abc', "Unterminated string starting at", 0],
  ['"a\u0001"', "Invalid control character at", 2],
  ['{"a" 1}', "Expecting ':' delimiter", 5],
  ['{"a":1 "b"}', "Expecting ',' delimiter", 7],
  ["[1 2]", "Expecting ',' delimiter", 3],
  ["1 2", "Extra data", 2],
  ["nul", "Expecting value", 0],
  ["-", "Expecting value", 0],
  ["01", "Extra data", 1],
  ["1.", "Extra data", 1],
  ["1e", "Extra data", 1],
  ["{", "Expecting property name enclosed in double quotes", 1],
  ["[", "Expecting value", 1],
  ['{"a":', "Expecting value", 5],
  ['"\\', "Unterminated string starting at", 0],
  ['"\\u', "Invalid \\uXXXX escape", 2],
  ['"\\ud800\\u12"', "Invalid \\uXXXX escape", 8],
  ['"\\ud83d\\ude00" x', "Extra data", 15],
  ['"\ud83d\ude00" x', "Extra data", 4],
  ["[1, -]", "Expecting value", 4],
  ['{"a": tru}', "Expecting value", 6],
  ["[1e5, 2E-3, -0.5] ]", "Extra data", 18],
];

function decodeError(text: string, opts?: { trailingCommaErrors?: boolean; values?: boolean }) {
  try {
    pyJsonLoads(text, opts);
  } catch (err) {
    if (err instanceof PyJsonDecodeError) return [err.msg, err.pos];
    throw err;
  }
  return null;
}

describe("pyJsonLoads (CPython's json.loads)", () => {
  it.each(CPYTHON_311)("refuses %j with Python's message and position", (text, msg, pos) => {
    expect(decodeError(text, { trailingCommaErrors: false })).toEqual([msg, pos]);
  });

  it.each(CPYTHON_311)(
    "refuses %j the same way when it only judges (no values)",
    (text, msg, pos) => {
      expect(decodeError(text, { trailingCommaErrors: false, values: false })).toEqual([msg, pos]);
    },
  );

  it("only judges without values: undefined for what it accepts, nothing built", () => {
    expect(pyJsonLoads('{"a": [1, "x\\u00e9", NaN]}', { values: false })).toBeUndefined();
    expect(() => pyJsonLoads("[".repeat(100_000), { values: false })).toThrow(RangeError);
  });

  it("words a trailing comma as Python 3.13 does, at the comma", () => {
    expect(decodeError('{"a": 1 , }')).toEqual(["Illegal trailing comma before end of object", 8]);
    expect(decodeError("[1,\n]")).toEqual(["Illegal trailing comma before end of array", 2]);
  });

  it("reads what JSON.parse reads to the same value, and Python's NaN and Infinity", () => {
    for (const text of [
      '{"a": [1, 2.5e3, -0, "x\\u00e9\\ud83d\\ude00", true, false, null]}',
      ' "s" ',
      "[]",
      "{}",
    ]) {
      expect(pyJsonLoads(text)).toEqual(JSON.parse(text));
    }
    expect(pyJsonLoads("[NaN, Infinity, -Infinity]")).toEqual([
      Number.NaN,
      Number.POSITIVE_INFINITY,
      Number.NEGATIVE_INFINITY,
    ]);
    // A "__proto__" key is an own property, as JSON.parse makes it, never the prototype.
    const obj = pyJsonLoads('{"__proto__": {"polluted": 1}, "a": NaN}') as Record<string, unknown>;
    expect(Object.getPrototypeOf(obj)).toBe(Object.prototype);
    expect(Object.keys(obj)).toEqual(["__proto__", "a"]);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it("gives up on nesting deeper than Python recurses, without overflowing the stack", () => {
    expect(() => pyJsonLoads("[".repeat(100_000))).toThrow(RangeError);
    expect(pyJsonLoads(`${"[".repeat(500)}${"]".repeat(500)}`)).toBeInstanceOf(Array);
  });
});
