/**
 * The text CPython's `json.loads` makes of bytes (what Starlette's
 * `request.json()` hands it): `json.detect_encoding` picks the codec from a
 * BOM or from where the first four bytes are zero (JSON starts with ASCII),
 * and the bytes are decoded with `errors="surrogatepass"`, so a surrogate
 * (UTF-8 `ED A0..BF xx`, a UTF-16 unit without its pair, a UTF-32 unit in
 * D800..DFFF) is kept as a lone code unit instead of being refused.
 */

/** Python's UnicodeDecodeError: bytes the chosen codec refuses (FastAPI's 400). */
export class PyUnicodeDecodeError extends Error {
  override readonly name = "PyUnicodeDecodeError";
}

/** The codecs `json.detect_encoding` returns. */
export type PyJsonEncoding =
  | "utf-8"
  | "utf-8-sig"
  | "utf-16"
  | "utf-16-be"
  | "utf-16-le"
  | "utf-32"
  | "utf-32-be"
  | "utf-32-le";

const startsWith = (b: Uint8Array, prefix: readonly number[]) => prefix.every((x, i) => b[i] === x);

/** `json.detect_encoding` (CPython 3.6+), test for test: UTF-32 BOMs first, as FF FE 00 00 starts with FF FE. */
export function pyDetectEncoding(b: Uint8Array): PyJsonEncoding {
  if (startsWith(b, [0x00, 0x00, 0xfe, 0xff]) || startsWith(b, [0xff, 0xfe, 0x00, 0x00])) {
    return "utf-32";
  }
  if (startsWith(b, [0xfe, 0xff]) || startsWith(b, [0xff, 0xfe])) return "utf-16";
  if (startsWith(b, [0xef, 0xbb, 0xbf])) return "utf-8-sig";
  if (b.length >= 4) {
    if (!b[0]) return b[1] ? "utf-16-be" : "utf-32-be";
    if (!b[1]) return b[2] || b[3] ? "utf-16-le" : "utf-32-le";
  } else if (b.length === 2) {
    if (!b[0]) return "utf-16-be";
    if (!b[1]) return "utf-16-le";
  }
  return "utf-8";
}

/**
 * `bytes.decode(json.detect_encoding(b), "surrogatepass")`: the str `json.loads`
 * parses. Throws PyUnicodeDecodeError where Python raises UnicodeDecodeError.
 */
export function pyDecodeJsonBytes(b: Uint8Array): string {
  switch (pyDetectEncoding(b)) {
    case "utf-8":
      return decodeUtf8(b);
    case "utf-8-sig":
      return decodeUtf8(b.subarray(3));
    case "utf-16":
      // The codec reads the BOM for the byte order and drops it (one, not a second).
      return decodeUtf16(b.subarray(2), b[0] === 0xfe);
    case "utf-16-be":
      return decodeUtf16(b, true);
    case "utf-16-le":
      return decodeUtf16(b, false);
    case "utf-32":
      return decodeUtf32(b.subarray(4), b[0] === 0x00);
    case "utf-32-be":
      return decodeUtf32(b, true);
    case "utf-32-le":
      return decodeUtf32(b, false);
  }
}

/** Strict UTF-8 that keeps U+FEFF: a BOM is dropped only where detect_encoding said utf-8-sig. */
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function decodeUtf8(b: Uint8Array): string {
  try {
    return strictUtf8.decode(b);
  } catch {
    // Refused: only encoded surrogates are still Python's to take. Rare, so decoded by hand.
    return decodeUtf8WithSurrogates(b);
  }
}

/**
 * UTF-8 as Python's strict decoder reads it (no overlong form, nothing above
 * U+10FFFF, no cut sequence), except that a surrogate passes as its own code
 * unit. Linear in the bytes, however many surrogates: no call per segment.
 */
function decodeUtf8WithSurrogates(b: Uint8Array): string {
  const units = new Uint16Array(b.length);
  let n = 0;
  let i = 0;
  while (i < b.length) {
    const lead = b[i] as number;
    if (lead < 0x80) {
      units[n++] = lead;
      i++;
      continue;
    }
    const [tail, min] = lead >= 0xf0 ? [3, 0x10000] : lead >= 0xe0 ? [2, 0x800] : [1, 0x80];
    let cp = lead & (0x3f >> tail);
    // 80..C1 start nothing (a continuation byte, or an overlong two-byte form); F5.. is past U+10FFFF.
    if (lead < 0xc2 || lead > 0xf4 || i + tail >= b.length) throw notDecodable("utf-8", i);
    for (let k = 1; k <= tail; k++) {
      const c = b[i + k] as number;
      if ((c & 0xc0) !== 0x80) throw notDecodable("utf-8", i);
      cp = (cp << 6) | (c & 0x3f);
    }
    if (cp < min || cp > 0x10ffff) throw notDecodable("utf-8", i);
    n = pushCodePoint(units, n, cp);
    i += tail + 1;
  }
  return unitsToString(units, n);
}

/** UTF-16: every code unit as it is, so an unpaired surrogate stays one (surrogatepass). */
function decodeUtf16(b: Uint8Array, bigEndian: boolean): string {
  if (b.length % 2 !== 0) throw notDecodable(bigEndian ? "utf-16-be" : "utf-16-le", b.length - 1);
  const le = Buffer.from(b);
  if (bigEndian) le.swap16();
  return le.toString("utf16le");
}

/** UTF-32: a unit above U+10FFFF is refused; one in D800..DFFF passes (surrogatepass). */
function decodeUtf32(b: Uint8Array, bigEndian: boolean): string {
  const codec = bigEndian ? "utf-32-be" : "utf-32-le";
  if (b.length % 4 !== 0) throw notDecodable(codec, b.length - (b.length % 4));
  const view = new DataView(b.buffer, b.byteOffset, b.length);
  const units = new Uint16Array(b.length / 2);
  let n = 0;
  for (let i = 0; i < b.length; i += 4) {
    const cp = view.getUint32(i, !bigEndian);
    if (cp > 0x10ffff) throw notDecodable(codec, i);
    n = pushCodePoint(units, n, cp);
  }
  return unitsToString(units, n);
}

function pushCodePoint(units: Uint16Array, n: number, cp: number): number {
  if (cp < 0x10000) {
    units[n] = cp;
    return n + 1;
  }
  units[n] = 0xd800 + ((cp - 0x10000) >> 10);
  units[n + 1] = 0xdc00 + ((cp - 0x10000) & 0x3ff);
  return n + 2;
}

/** Code units to a string, in slices (one call per unit, or per whole body, would be slow or overflow the stack). */
function unitsToString(units: Uint16Array, n: number): string {
  const SLICE = 8192;
  const parts: string[] = [];
  for (let i = 0; i < n; i += SLICE) {
    parts.push(String.fromCharCode(...units.subarray(i, Math.min(n, i + SLICE))));
  }
  return parts.join("");
}

function notDecodable(codec: string, at: number): PyUnicodeDecodeError {
  return new PyUnicodeDecodeError(`'${codec}' codec can't decode the bytes at position ${at}`);
}
