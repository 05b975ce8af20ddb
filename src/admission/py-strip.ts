/**
 * Python's `str.strip()` with no argument, which FermiLink applies to ids:
 * the characters `str.isspace()` accepts. JS `trim()` differs on both sides:
 * it keeps U+001C–U+001F and U+0085, and removes U+FEFF, which Python keeps.
 */
const PY_SPACE =
  "\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const PY_STRIP = new RegExp(`^[${PY_SPACE}]+|[${PY_SPACE}]+$`, "g");

export function pyStrip(s: string): string {
  return s.replace(PY_STRIP, "");
}

/** `not s.strip()` in Python: empty or only whitespace. */
export function isPyBlank(s: string): boolean {
  return pyStrip(s) === "";
}
