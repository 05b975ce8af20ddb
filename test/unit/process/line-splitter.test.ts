import { describe, expect, it } from "vitest";
import { splitLines } from "../../../src/process/line-splitter.js";

async function split(chunks: (string | Buffer)[], max = 1 << 20, keep?: number) {
  async function* src() {
    for (const c of chunks) yield Buffer.isBuffer(c) ? c : Buffer.from(c);
  }
  const out: { text: string; truncated: boolean }[] = [];
  for await (const l of splitLines(src(), max, keep)) out.push(l);
  return out;
}

/** `bytes` in pieces of 1 to 97 bytes, as a pipe may deliver them. */
function pieces(bytes: Buffer, seed: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < bytes.length; ) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    const n = 1 + (seed % 97);
    out.push(bytes.subarray(i, i + n));
    i += n;
  }
  return out;
}

describe("splitLines", () => {
  it("splits on LF only, keeps CR, skips empty lines and emits a final partial line", async () => {
    const got = await split(["a\r\nb", "c\n\n", "\nd"]);
    expect(got.map((l) => l.text)).toEqual(["a\r", "bc", "d"]);
  });

  it("joins a UTF-8 sequence split across chunks and replaces invalid bytes", async () => {
    const e = Buffer.from("é\n");
    const got = await split([e.subarray(0, 1), e.subarray(1), Buffer.from([0x61, 0xff, 0x0a])]);
    expect(got.map((l) => l.text)).toEqual(["é", "a\uFFFD"]);
  });

  it("keeps a U+FEFF (byte order mark) that begins a line, as FermiLink's decode does", async () => {
    const got = await split(["\uFEFFa\n\uFEFF", "b\n", "\uFEFFc"]);
    expect(got.map((l) => l.text)).toEqual(["\uFEFFa", "\uFEFFb", "\uFEFFc"]);
  });

  it("keeps a 70,000-character line intact under the default cap", async () => {
    const line = "x".repeat(70_000);
    const got = await split([line.slice(0, 30_000), line.slice(30_000), "\n"], 8 << 20);
    expect(got).toEqual([{ text: line, truncated: false }]);
  });

  it("cuts a line over the cap at a code point boundary, flags it, and skips its rest", async () => {
    const got = await split(["ab", "éé", "zzzz\nnext\n"], 4);
    expect(got).toEqual([
      { text: "abé", truncated: true },
      { text: "next", truncated: false },
    ]);
  });

  it("gives the same lines however the bytes are chunked (fuzz)", async () => {
    let seed = 7;
    const rand = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    const alphabet = [0x61, 0x0a, 0x0d, 0xc3, 0xa9, 0xff, 0xe2, 0x82, 0xac];
    for (let round = 0; round < 200; round++) {
      const bytes = Buffer.from(
        Array.from(
          { length: 1 + Math.floor(rand() * 60) },
          () => alphabet[Math.floor(rand() * alphabet.length)] ?? 0,
        ),
      );
      const chunks: Buffer[] = [];
      for (let i = 0; i < bytes.length; ) {
        const n = 1 + Math.floor(rand() * 7);
        chunks.push(bytes.subarray(i, i + n));
        i += n;
      }
      const expected = bytes
        .toString("latin1")
        .split("\n")
        .filter((s) => s !== "")
        .map((s) => new TextDecoder().decode(Buffer.from(s, "latin1")));
      expect((await split(chunks)).map((l) => l.text)).toEqual(expected);
    }
  });

  describe("a JSON line over the cap", () => {
    // A Claude result line whose final text alone passes the cap.
    const text = `${'é"\\\n\u{1F600}'.repeat(40)}${"x".repeat(5000)}`;
    const event = {
      total_cost_usd: 0.25,
      usage: { input_tokens: 3, output_tokens: 2 },
      permission_denials: [{ tool_input: { content: "y".repeat(3000) } }],
      is_error: false,
      result: text,
      type: "result",
      subtype: "success",
    };
    const line = Buffer.from(`${JSON.stringify(event)}\r\n`);
    const cutMark = /… \[cut: (\d+) bytes\]$/;

    it("keeps every small value, cuts each long string with a mark, stays JSON and within the cap", async () => {
      for (let seed = 1; seed <= 40; seed++) {
        // Cuts that fall inside escapes and multi-byte characters, at every phase of the text.
        const keep = 50 + (seed % 13);
        const got = await split([...pieces(line, seed), "next\n"], 1000, keep);
        expect(got.map((l) => l.truncated)).toEqual([true, false]);
        const kept = got[0]?.text ?? "";
        expect(Buffer.byteLength(kept)).toBeLessThanOrEqual(1000);
        expect(kept.endsWith("\r")).toBe(true);
        const back = JSON.parse(kept) as typeof event;
        const { result, permission_denials, ...small } = back;
        const { result: _r, permission_denials: _p, ...smallBefore } = event;
        expect(small).toEqual(smallBefore);
        // The kept part is the text's start, whole characters and escapes; the mark counts the rest.
        const head = result.replace(cutMark, "");
        expect(text.startsWith(head)).toBe(true);
        const cutBytes = Number(cutMark.exec(result)?.[1]);
        expect(Buffer.byteLength(JSON.stringify(head)) + cutBytes).toBe(
          Buffer.byteLength(JSON.stringify(text)),
        );
        const content = permission_denials[0]?.tool_input.content ?? "";
        expect(content).toBe(`${"y".repeat(keep)}… [cut: ${3000 - keep} bytes]`);
      }
    });

    it("never cuts between the two escapes of a surrogate pair (ensure_ascii output)", async () => {
      // As Python's json.dumps writes it: every character past ASCII escaped, an emoji as two.
      const ascii = `{"type":"result","result":${JSON.stringify(text).replace(
        /[^\x20-\x7e]/g,
        (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
      )},"is_error":false}\n`;
      // The cut at every phase of the text's repeat, 24 bytes once escaped.
      for (let keep = 40; keep < 66; keep++) {
        const [got] = await split(pieces(Buffer.from(ascii), keep), 1000, keep);
        const result = (JSON.parse(got?.text ?? "") as { result: string }).result;
        const head = result.replace(cutMark, "");
        expect(head).not.toMatch(/[\ud800-\udbff]$/);
        expect(text.startsWith(head)).toBe(true);
      }
    });

    it("keeps only the line's first bytes when its cut form would still pass the cap", async () => {
      const many = Buffer.from(JSON.stringify({ a: Array(40).fill("z".repeat(60)) }));
      const got = await split([...pieces(many, 3), "\nnext\n"], 1000, 64);
      expect(got).toEqual([
        { text: many.subarray(0, 1000).toString(), truncated: true },
        { text: "next", truncated: false },
      ]);
    });

    it("keeps only the first bytes of a JSON line that does not end as one value", async () => {
      const open = Buffer.from(`{"a":"${"w".repeat(2000)}"} trailing`);
      expect(await split([open, "\n"], 1000, 64)).toEqual([
        { text: open.subarray(0, 1000).toString(), truncated: true },
      ]);
      const unended = Buffer.from(`{"a":"${"w".repeat(2000)}`);
      expect(await split([unended], 1000, 64)).toEqual([
        { text: unended.subarray(0, 1000).toString(), truncated: true },
      ]);
    });
  });
});
