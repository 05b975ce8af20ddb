/**
 * JSON text the way Python's `json.dumps` writes it by default (`", "` and
 * `": "` separators, non-ASCII escaped as \uXXXX), so the `log`, `meta` and
 * `runner.exit` payloads are byte-for-byte what FermiLink's runner sends.
 */
export function pyJsonDumps(value: unknown): string {
  if (value === null || value === undefined) return "null";
  if (typeof value === "string") return asciiJsonString(value);
  if (typeof value === "number") {
    if (!Number.isFinite(value)) return "null";
    return Number.isInteger(value) ? String(value) : pyFloat(value);
  }
  if (typeof value === "boolean") return value ? "true" : "false";
  if (Array.isArray(value)) return `[${value.map(pyJsonDumps).join(", ")}]`;
  if (typeof value === "object") {
    const parts: string[] = [];
    for (const [k, v] of Object.entries(value)) {
      if (v === undefined) continue;
      parts.push(`${asciiJsonString(k)}: ${pyJsonDumps(v)}`);
    }
    return `{${parts.join(", ")}}`;
  }
  return "null";
}

function pyFloat(n: number): string {
  const s = String(n);
  // Python writes 1e-07 where JS writes 1e-7, and 1e+22 likewise.
  return s.replace(/e([+-])(\d)$/, "e$10$2");
}

function asciiJsonString(s: string): string {
  return JSON.stringify(s).replace(
    /[\u007f-\uffff]/g,
    (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/** CPython's `json.JSONDecodeError`: its message without the line/column suffix, and its index. */
export class PyJsonDecodeError extends Error {
  override readonly name = "PyJsonDecodeError";
  constructor(
    /** `e.msg`, e.g. "Expecting value". */
    readonly msg: string,
    /** `e.pos`: the index in code points (a Python str's index) where decoding failed. */
    readonly pos: number,
  ) {
    super(`${msg} (char ${pos})`);
  }
}

/** Python gives up on nesting near its recursion limit (1000 frames, some already in use). */
export const PY_MAX_DEPTH = 900;

/**
 * Whether valid JSON `text` nests arrays and objects deeper than Python's
 * `json.loads` goes (PY_MAX_DEPTH), which JSON.parse takes without complaint.
 * One pass over the characters, strings skipped; text too short to nest that
 * deep (every level takes two characters) is not scanned.
 */
export function nestsTooDeep(text: string): boolean {
  if (text.length < 2 * PY_MAX_DEPTH) return false;
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      // Skip the string: to the next quote that no backslash escapes.
      for (i++; i < text.length; i++) {
        const d = text.charCodeAt(i);
        if (d === 0x5c) i++;
        else if (d === 0x22) break;
      }
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > PY_MAX_DEPTH) return true;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return false;
}

const isWs = (c: number) => c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;
const isDigit = (c: number) => c >= 0x30 && c <= 0x39;
const ESCAPES: Record<string, string> = {
  '"': '"',
  "\\": "\\",
  "/": "/",
  b: "\b",
  f: "\f",
  n: "\n",
  r: "\r",
  t: "\t",
};

/**
 * `json.loads` of CPython (its C scanner, default options): the value, or a
 * PyJsonDecodeError with Python's message and position, so a 422 says what
 * FastAPI says; a RangeError when the nesting is deeper than Python would
 * go (its RecursionError). Python also takes NaN, Infinity and -Infinity.
 * Slower than JSON.parse: meant for the text JSON.parse refused.
 * `trailingCommaErrors: false` gives the messages of Python before 3.13
 * ("Expecting value" / "Expecting property name ..." after `,]` / `,}`).
 */
export function pyJsonLoads(text: string, opts: { trailingCommaErrors?: boolean } = {}): unknown {
  const s = text;
  const len = s.length;
  const trailingComma = opts.trailingCommaErrors ?? true;
  // Positions are counted in UTF-16 units here and in code points (a Python str's) in the error.
  const fail = (msg: string, pos: number): never => {
    throw new PyJsonDecodeError(msg, [...s.slice(0, pos)].length);
  };
  const skipWs = (i: number) => {
    while (i < len && isWs(s.charCodeAt(i))) i++;
    return i;
  };
  /** Four hex digits from `from`, or -1. */
  const hex4 = (from: number): number => {
    const digits = s.slice(from, from + 4);
    return /^[0-9a-fA-F]{4}$/.test(digits) ? Number.parseInt(digits, 16) : -1;
  };

  // scanstring_unicode: `end` is the index after the opening quote.
  const scanString = (start: number): [string, number] => {
    const begin = start - 1;
    let end = start;
    let out = "";
    for (;;) {
      let next = end;
      let c = 0;
      for (; next < len; next++) {
        c = s.charCodeAt(next);
        if (c === 0x22 || c === 0x5c) break;
        if (c <= 0x1f) fail("Invalid control character at", next);
      }
      if (next >= len) fail("Unterminated string starting at", begin);
      out += s.slice(end, next);
      next++;
      if (c === 0x22) return [out, next];
      if (next === len) fail("Unterminated string starting at", begin);
      const esc = s[next] as string;
      if (esc !== "u") {
        end = next + 1;
        const ch = ESCAPES[esc];
        if (ch === undefined) fail("Invalid \\escape", end - 2);
        out += ch;
        continue;
      }
      next++;
      end = next + 4;
      if (end >= len) fail("Invalid \\uXXXX escape", next - 1);
      let code = hex4(next);
      if (code < 0) fail("Invalid \\uXXXX escape", end - 5);
      next = end;
      if (
        code >= 0xd800 &&
        code <= 0xdbff &&
        end + 6 < len &&
        s[next] === "\\" &&
        s[next + 1] === "u"
      ) {
        end += 6;
        const low = hex4(next + 2);
        if (low < 0) fail("Invalid \\uXXXX escape", end - 5);
        if (low >= 0xdc00 && low <= 0xdfff)
          code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
        else end -= 6;
      }
      out += String.fromCodePoint(code);
    }
  };

  const matchNumber = (start: number): [number, number] => {
    const endIdx = len - 1;
    let idx = start;
    if (s[idx] === "-") {
      idx++;
      if (idx > endIdx) fail("Expecting value", start);
    }
    const first = s.charCodeAt(idx);
    if (first >= 0x31 && first <= 0x39) {
      idx++;
      while (idx <= endIdx && isDigit(s.charCodeAt(idx))) idx++;
    } else if (first === 0x30) idx++;
    else fail("Expecting value", start);
    if (idx < endIdx && s[idx] === "." && isDigit(s.charCodeAt(idx + 1))) {
      idx += 2;
      while (idx <= endIdx && isDigit(s.charCodeAt(idx))) idx++;
    }
    if (idx < endIdx && (s[idx] === "e" || s[idx] === "E")) {
      const eStart = idx;
      idx++;
      if (idx < endIdx && (s[idx] === "-" || s[idx] === "+")) idx++;
      while (idx <= endIdx && isDigit(s.charCodeAt(idx))) idx++;
      if (!isDigit(s.charCodeAt(idx - 1))) idx = eStart;
    }
    return [Number(s.slice(start, idx)), idx];
  };

  const scanOnce = (idx: number, depth: number): [unknown, number] => {
    if (idx >= len) fail("Expecting value", idx);
    switch (s[idx]) {
      case '"':
        return scanString(idx + 1);
      case "{":
        if (depth >= PY_MAX_DEPTH) throw new RangeError("maximum recursion depth exceeded");
        return parseObject(idx + 1, depth + 1);
      case "[":
        if (depth >= PY_MAX_DEPTH) throw new RangeError("maximum recursion depth exceeded");
        return parseArray(idx + 1, depth + 1);
      case "n":
        if (s.startsWith("null", idx)) return [null, idx + 4];
        break;
      case "t":
        if (s.startsWith("true", idx)) return [true, idx + 4];
        break;
      case "f":
        if (s.startsWith("false", idx)) return [false, idx + 5];
        break;
      case "N":
        if (s.startsWith("NaN", idx)) return [Number.NaN, idx + 3];
        break;
      case "I":
        if (s.startsWith("Infinity", idx)) return [Number.POSITIVE_INFINITY, idx + 8];
        break;
      case "-":
        if (s.startsWith("-Infinity", idx)) return [Number.NEGATIVE_INFINITY, idx + 9];
        break;
    }
    return matchNumber(idx);
  };

  const parseObject = (start: number, depth: number): [unknown, number] => {
    const obj: Record<string, unknown> = {};
    let idx = skipWs(start);
    if (idx < len && s[idx] === "}") return [obj, idx + 1];
    for (;;) {
      if (idx >= len || s[idx] !== '"') {
        fail("Expecting property name enclosed in double quotes", idx);
      }
      const [key, afterKey] = scanString(idx + 1);
      idx = skipWs(afterKey);
      if (idx >= len || s[idx] !== ":") fail("Expecting ':' delimiter", idx);
      idx = skipWs(idx + 1);
      const [value, afterValue] = scanOnce(idx, depth);
      // An own property even for "__proto__", as JSON.parse makes it (never the prototype).
      Object.defineProperty(obj, key, {
        value,
        enumerable: true,
        writable: true,
        configurable: true,
      });
      idx = skipWs(afterValue);
      if (idx < len && s[idx] === "}") return [obj, idx + 1];
      if (idx >= len || s[idx] !== ",") fail("Expecting ',' delimiter", idx);
      const comma = idx;
      idx = skipWs(idx + 1);
      if (trailingComma && idx < len && s[idx] === "}") {
        fail("Illegal trailing comma before end of object", comma);
      }
    }
  };

  const parseArray = (start: number, depth: number): [unknown, number] => {
    const arr: unknown[] = [];
    let idx = skipWs(start);
    if (idx < len && s[idx] === "]") return [arr, idx + 1];
    for (;;) {
      const [value, afterValue] = scanOnce(idx, depth);
      arr.push(value);
      idx = skipWs(afterValue);
      if (idx < len && s[idx] === "]") return [arr, idx + 1];
      if (idx >= len || s[idx] !== ",") fail("Expecting ',' delimiter", idx);
      const comma = idx;
      idx = skipWs(idx + 1);
      if (trailingComma && idx < len && s[idx] === "]") {
        fail("Illegal trailing comma before end of array", comma);
      }
    }
  };

  // JSONDecoder.decode: whitespace, one value, whitespace, then nothing.
  const [value, end] = scanOnce(skipWs(0), 0);
  const rest = skipWs(end);
  if (rest !== len) fail("Extra data", rest);
  return value;
}
