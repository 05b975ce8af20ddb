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
