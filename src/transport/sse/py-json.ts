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
    return Number.isInteger(value) ? String(value) : pyFloatRepr(value);
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

/**
 * Python's `repr` of a float (what `json.dumps` and `str()` write): the
 * shortest digits that read back to `n`, as JS's, but a whole number keeps
 * `.0`, and the exponent form starts below 1e-4 and at 1e16 (JS: 1e-6 and
 * 1e21) with at least two exponent digits (`1e-05`, `2.5e+16`).
 */
export function pyFloatRepr(n: number): string {
  if (!Number.isFinite(n)) return Number.isNaN(n) ? "NaN" : n > 0 ? "Infinity" : "-Infinity";
  if (n === 0) return Object.is(n, -0) ? "-0.0" : "0.0";
  const [mantissa = "", exp = "0"] = n.toExponential().split("e");
  const e = Number(exp);
  if (e < -4 || e >= 16)
    return `${mantissa}e${e < 0 ? "-" : "+"}${String(Math.abs(e)).padStart(2, "0")}`;
  const fixed = String(n);
  return fixed.includes(".") ? fixed : `${fixed}.0`;
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
    if (c === 0x22) i = closingQuote(text, i);
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > PY_MAX_DEPTH) return true;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return false;
}

/** The index of the quote that closes the string opened at `open` (the next one no backslash escapes), or the length. */
function closingQuote(text: string, open: number): number {
  let i = open + 1;
  for (; i < text.length; i++) {
    const d = text.charCodeAt(i);
    if (d === 0x5c) i++;
    else if (d === 0x22) break;
  }
  return i;
}

/**
 * JSON.parse that reads Python's NaN, Infinity and -Infinity as `json.loads`
 * does: each one outside strings becomes a JSON value standing for it,
 * padded with spaces so it never joins its neighbours into one token
 * (`1Infinity` stays an error). Infinity is `1e999`; NaN is a string the
 * body itself cannot hold, turned back into NaN afterwards (and met as a key,
 * it was a NaN where Python wants a property name). Python's grammar is
 * JSON's plus those three values, so the result is a value exactly when
 * Python accepts the text; undefined (never a JSON value) when it does not.
 * One linear pass before JSON.parse, and only for text that spells them.
 */
export function jsonParseWithPyConstants(text: string): unknown {
  if (!text.includes("NaN") && !text.includes("Infinity")) return jsonParseOrUndefined(text);
  const nanValue = nanStandIn(text);
  const asJson = {
    NaN: ` ${JSON.stringify(nanValue)} `,
    Infinity: " 1e999 ",
    "-Infinity": " -1e999 ",
  };
  // One string grown by `+=` (ropes): an array of slices joined was several times slower here.
  let json = "";
  let from = 0;
  let nanCount = 0;
  for (let i = 0; i < text.length; i++) {
    if (text.charCodeAt(i) === 0x22) {
      i = closingQuote(text, i);
      continue;
    }
    const token = pyConstantAt(text, i);
    if (token === null) continue;
    if (token === "NaN") nanCount++;
    json += text.slice(from, i) + asJson[token];
    from = i + token.length;
    i = from - 1;
  }
  // Spelled only inside strings: the text is plain JSON, or not JSON at all.
  if (json === "") return jsonParseOrUndefined(text);
  const value = jsonParseOrUndefined(json + text.slice(from));
  return nanCount === 0 || value === undefined ? value : restoreNaN(value, nanValue);
}

function jsonParseOrUndefined(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * A string no JSON string of `text` decodes to: NUL, which a JSON string can
 * only spell `\u0000` (a raw one is refused), when the text has no such escape;
 * else an unguessable one (a body that guessed it only turns its own string into NaN).
 */
function nanStandIn(text: string): string {
  if (!text.includes("\\u0000")) return "\u0000";
  return `\u0000NaN ${Math.random().toString(36).slice(2, 10)}`;
}

/**
 * `value` with every stand-in replaced by NaN, in place; undefined when one
 * is a key. Iterative: the body may nest deeper than the stack goes.
 */
function restoreNaN(value: unknown, nanValue: string): unknown {
  if (value === nanValue) return Number.NaN;
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const node = stack.pop();
    if (Array.isArray(node)) {
      for (let i = 0; i < node.length; i++) {
        const v: unknown = node[i];
        if (v === nanValue) node[i] = Number.NaN;
        else if (v !== null && typeof v === "object") stack.push(v);
      }
      continue;
    }
    const holder = node as Record<string, unknown>;
    // for-in, not Object.keys: no array per object. JSON.parse makes plain objects, and
    // Object.prototype has no enumerable property, so only their own keys are visited.
    for (const key in holder) {
      if (key === nanValue) return undefined;
      const v = holder[key];
      // An own property, "__proto__" included (JSON.parse made it one): assignment sets it.
      if (v === nanValue) holder[key] = Number.NaN;
      else if (v !== null && typeof v === "object") stack.push(v);
    }
  }
  return value;
}

/** The constant of Python's scanner (`scan_once`'s N, I and -I cases) starting at `i`, if any. */
function pyConstantAt(text: string, i: number): "NaN" | "Infinity" | "-Infinity" | null {
  switch (text.charCodeAt(i)) {
    case 0x4e:
      return text.startsWith("NaN", i) ? "NaN" : null;
    case 0x49:
      return text.startsWith("Infinity", i) ? "Infinity" : null;
    case 0x2d:
      return text.startsWith("-Infinity", i) ? "-Infinity" : null;
    default:
      return null;
  }
}

/** The code points (a Python str's length) in the first `units` UTF-16 units of `s`. */
function codePoints(s: string, units: number): number {
  let n = 0;
  for (let i = 0; i < units; i++) {
    const c = s.charCodeAt(i);
    // The second half of a surrogate pair is not a character of its own.
    if (c >= 0xdc00 && c <= 0xdfff && i > 0 && (s.charCodeAt(i - 1) & 0xfc00) === 0xd800) continue;
    n++;
  }
  return n;
}

/** A hex digit's value, or -1. */
function hexDigit(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const lower = c | 0x20;
  return lower >= 0x61 && lower <= 0x66 ? lower - 0x61 + 10 : -1;
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
 * Slower than JSON.parse: meant for the text JSON.parse refused. With
 * `values: false` it only judges the text (undefined when Python accepts
 * it): nothing is built, so it stays linear and fast on hostile input.
 * `trailingCommaErrors: false` gives the messages of Python before 3.13
 * ("Expecting value" / "Expecting property name ..." after `,]` / `,}`).
 */
export function pyJsonLoads(
  text: string,
  opts: { trailingCommaErrors?: boolean; values?: boolean } = {},
): unknown {
  const s = text;
  const len = s.length;
  const trailingComma = opts.trailingCommaErrors ?? true;
  // Without values only the verdict is wanted: no string, number or container is built.
  const build = opts.values ?? true;
  // Positions are counted in UTF-16 units here and in code points (a Python str's) in the error.
  const fail = (msg: string, pos: number): never => {
    throw new PyJsonDecodeError(msg, codePoints(s, pos));
  };
  const skipWs = (i: number) => {
    while (i < len && isWs(s.charCodeAt(i))) i++;
    return i;
  };
  /** Four hex digits from `from`, or -1. */
  const hex4 = (from: number): number => {
    let code = 0;
    for (let i = from; i < from + 4; i++) {
      const d = hexDigit(s.charCodeAt(i));
      if (d < 0) return -1;
      code = code * 16 + d;
    }
    return code;
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
      if (build) out += s.slice(end, next);
      next++;
      if (c === 0x22) return [out, next];
      if (next === len) fail("Unterminated string starting at", begin);
      const esc = s[next] as string;
      if (esc !== "u") {
        end = next + 1;
        const ch = ESCAPES[esc];
        if (ch === undefined) fail("Invalid \\escape", end - 2);
        if (build) out += ch;
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
      if (build) out += String.fromCodePoint(code);
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
    return [build ? Number(s.slice(start, idx)) : 0, idx];
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
    const obj: Record<string, unknown> | null = build ? {} : null;
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
      if (obj !== null) {
        Object.defineProperty(obj, key, {
          value,
          enumerable: true,
          writable: true,
          configurable: true,
        });
      }
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
    const arr: unknown[] | null = build ? [] : null;
    let idx = skipWs(start);
    if (idx < len && s[idx] === "]") return [arr, idx + 1];
    for (;;) {
      const [value, afterValue] = scanOnce(idx, depth);
      arr?.push(value);
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
  return build ? value : undefined;
}
