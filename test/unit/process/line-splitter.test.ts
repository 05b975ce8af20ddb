import { describe, expect, it } from "vitest";
import { splitLines } from "../../../src/process/line-splitter.js";

async function split(chunks: (string | Buffer)[], max = 1 << 20) {
  async function* src() {
    for (const c of chunks) yield Buffer.isBuffer(c) ? c : Buffer.from(c);
  }
  const out: { text: string; truncated: boolean }[] = [];
  for await (const l of splitLines(src(), max)) out.push(l);
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
});
