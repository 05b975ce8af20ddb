/** One output line: decoded text (trailing `\n` removed, `\r` kept) and whether it was cut. */
export interface SplitLine {
  text: string;
  truncated: boolean;
}

// ignoreBOM: a U+FEFF that starts a line is text (FermiLink's decode keeps it); each line is a
// separate decode, so the default would drop it from every line that begins with one.
const decoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });

/** Length of the longest prefix of `buf` that does not end inside a UTF-8 sequence. */
function completeUtf8Prefix(buf: Buffer): number {
  let i = buf.length - 1;
  let continuation = 0;
  // Continuation bytes are 10xxxxxx; the lead byte says how long its sequence is.
  while (i >= 0 && continuation < 3 && ((buf[i] ?? 0) & 0xc0) === 0x80) {
    i--;
    continuation++;
  }
  if (i < 0) return buf.length;
  const lead = buf[i] ?? 0;
  const need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
  return buf.length - i >= need ? buf.length : i;
}

/** Bytes a string value of a cut JSON line keeps: enough for any id, path, status or error. */
export function keptStringBytes(maxLineBytes: number): number {
  return Math.max(16, Math.min(64 * 1024, Math.floor(maxLineBytes / 16)));
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const isOpen = (b: number) => b === 0x7b || b === 0x5b;
const isClose = (b: number) => b === 0x7d || b === 0x5d;
const isSpace = (b: number) => b === 0x20 || b === 0x09 || b === 0x0d;
/** A hex digit's value (`0-9`, `a-f`, `A-F`); what JSON does not allow gives some other number. */
const hexValue = (b: number) => (b <= 0x39 ? b - 0x30 : (b | 0x20) - 0x57);

// Where the scanner of an oversized line is (plain numbers: `const enum` does not survive
// isolatedModules builds).
/** Before the value: only whitespace so far. */
const AT_START = 0;
/** Inside the value, outside any string. */
const AT_VALUE = 1;
/** Inside a string, copying it. */
const AT_COPY = 2;
/** Inside a string past its kept bytes, counting what is cut. */
const AT_SKIP = 3;
/** After the value: only whitespace may follow. */
const AT_END = 4;

/**
 * A line over the cap, fed all its bytes as they arrive. Its first bytes
 * alone would be JSON cut mid-value, which no normaliser reads: a Claude
 * `result` line with a long final text lost the run's outcome, usage and
 * cost. So a JSON object or array line streams through a small scanner that
 * copies everything but long string values, which keep their first
 * `keep` bytes and end with `… [cut: N bytes]` (N: the bytes of the line
 * left out). What stays is valid JSON with the same keys and small values.
 * Memory stays bounded: the compact form is given up once it would pass the
 * cap, and then, as for a line that is no JSON, the line's first `max`
 * bytes (cut at a code point) are kept and the rest skipped.
 */
class OversizedLine {
  /** The line's first `max` bytes: what is kept when there is no compact form. */
  private head: Buffer[] = [];
  private headSize = 0;
  /** The compact form so far; null once given up. */
  private out: Buffer | null;
  private outLen = 0;
  private at = AT_START;
  private depth = 0;
  /** Bytes of the current string copied, and cut. */
  private kept = 0;
  private cut = 0;
  /** In an escape: the byte after `\` comes next, or this many hex digits of a `\u`. */
  private escHead = false;
  private escLeft = 0;
  /** The code unit a `\u` escape names, as its hex digits arrive. */
  private escCode = 0;
  /**
   * The last escape was a high surrogate's: the escape of its low half stays with it, else the
   * kept text would end in half a character (`\ud83d` alone, ensure_ascii output cut mid-pair).
   */
  private pairOpen = false;

  constructor(
    private readonly max: number,
    private readonly keep: number,
  ) {
    this.out = Buffer.allocUnsafe(Math.min(64 * 1024, max));
  }

  /** True once the compact form was given up: `line()` is then the head, and more bytes change nothing. */
  get gaveUp(): boolean {
    return this.out === null;
  }

  /** Feed the line's next bytes. `owned`: this line may keep `bytes`, which no one reuses. */
  push(bytes: Buffer, owned = false): void {
    if (this.headSize < this.max) {
      const n = Math.min(bytes.length, this.max - this.headSize);
      const kept = bytes.subarray(0, n);
      this.head.push(owned ? kept : Buffer.from(kept));
      this.headSize += n;
    }
    if (this.out !== null) this.scan(bytes);
  }

  /** The line as kept, flagged cut: the compact form of a whole JSON value, else the head. */
  line(): SplitLine {
    let bytes: Buffer;
    if (this.out !== null && this.at === AT_END) {
      bytes = this.out.subarray(0, this.outLen);
    } else {
      const head = Buffer.concat(this.head, this.headSize);
      bytes = head.subarray(0, completeUtf8Prefix(head));
    }
    this.out = null;
    this.head = [];
    return { text: decoder.decode(bytes), truncated: true };
  }

  private write(b: number): void {
    let out = this.out as Buffer;
    if (this.outLen >= this.max) {
      this.out = null;
      return;
    }
    if (this.outLen === out.length) {
      const next = Buffer.allocUnsafe(Math.min(this.max, out.length * 2));
      out.copy(next, 0, 0, this.outLen);
      this.out = out = next;
    }
    out[this.outLen++] = b;
  }

  private writeMark(): void {
    for (const b of Buffer.from(`… [cut: ${this.cut} bytes]`)) {
      if (this.out === null) return;
      this.write(b);
    }
  }

  private scan(bytes: Buffer): void {
    // The next `"` and `\` at or after i, each found once with indexOf and reused until
    // passed: a cut string's bytes are skipped in bulk, not one by one.
    let quoteAt = -1;
    let slashAt = -1;
    for (let i = 0; i < bytes.length && this.out !== null; i++) {
      const b = bytes[i] as number;
      switch (this.at) {
        case AT_START:
          if (isOpen(b)) {
            this.at = AT_VALUE;
            this.depth = 1;
          } else if (!isSpace(b)) {
            this.out = null;
            break;
          }
          this.write(b);
          break;
        case AT_VALUE:
          if (b === QUOTE) {
            this.at = AT_COPY;
            this.kept = 0;
            this.pairOpen = false;
          } else if (isOpen(b)) this.depth++;
          else if (isClose(b) && --this.depth === 0) this.at = AT_END;
          this.write(b);
          break;
        case AT_COPY:
          if (this.escHead) {
            this.escHead = false;
            this.escLeft = b === 0x75 ? 4 : 0;
            this.escCode = 0;
          } else if (this.escLeft > 0) {
            this.escCode = this.escCode * 16 + hexValue(b);
            if (--this.escLeft === 0)
              this.pairOpen = this.escCode >= 0xd800 && this.escCode < 0xdc00;
          } else if (b === QUOTE) this.at = AT_VALUE;
          else if (
            this.kept >= this.keep &&
            (b & 0xc0) !== 0x80 &&
            !(this.pairOpen && b === BACKSLASH)
          ) {
            // A character's first byte, outside an escape: the cut starts here.
            this.at = AT_SKIP;
            this.cut = 0;
            i--;
            break;
          } else {
            this.pairOpen = false;
            if (b === BACKSLASH) this.escHead = true;
          }
          this.kept++;
          this.write(b);
          break;
        case AT_SKIP: {
          if (this.escHead) {
            this.escHead = false;
            this.cut++;
            break;
          }
          if (quoteAt < i) quoteAt = bytes.indexOf(QUOTE, i);
          if (quoteAt === -1) quoteAt = bytes.length;
          if (slashAt < i) slashAt = bytes.indexOf(BACKSLASH, i);
          if (slashAt === -1) slashAt = bytes.length;
          const next = Math.min(quoteAt, slashAt);
          this.cut += next - i;
          i = next;
          if (i === bytes.length) return;
          if (next === slashAt) {
            // The escaped byte goes with it, or, past this chunk's end, with the next chunk.
            if (i + 1 < bytes.length) i++;
            else this.escHead = true;
            this.cut += i === next ? 1 : 2;
          } else {
            this.writeMark();
            this.write(QUOTE);
            this.at = AT_VALUE;
          }
          break;
        }
        case AT_END:
          if (!isSpace(b)) {
            this.out = null;
            break;
          }
          this.write(b);
          break;
      }
    }
  }
}

/**
 * Split a byte stream into lines on `\n` only (spec §2.1: a `\r` stays in the
 * text), skip empty lines, emit a final partial line at EOF. No line is kept
 * longer than `maxLineBytes`: a longer one is flagged `truncated: true` and
 * kept as `OversizedLine` says (a JSON line with its long strings cut, else
 * its first `maxLineBytes` bytes, cut at a code point boundary, the rest up
 * to the next `\n` discarded). While it is read, an over-long JSON line holds
 * its first `maxLineBytes` bytes and its cut form, so about twice the cap at
 * most, and is emitted when it ends. Bytes are decoded per line with U+FFFD for
 * invalid sequences. Yields the lines each chunk completes as one batch (one
 * await per chunk, not per line). Pull-based: nothing is read while the
 * consumer does not pull, which is the backpressure that pauses the child's pipe.
 */
export async function* splitLineBatches(
  source: AsyncIterable<Buffer>,
  maxLineBytes: number,
  keepStringBytes = keptStringBytes(maxLineBytes),
): AsyncGenerator<SplitLine[]> {
  let parts: Buffer[] = [];
  let size = 0;
  /** The line being read when it is over the cap. */
  let over: OversizedLine | null = null;
  const take = (): Buffer => {
    const whole = parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, size);
    parts = [];
    size = 0;
    return whole;
  };
  for await (const chunk of source) {
    const batch: SplitLine[] = [];
    let start = 0;
    while (start < chunk.length) {
      const nl = chunk.indexOf(0x0a, start);
      const end = nl === -1 ? chunk.length : nl;
      if (over === null) {
        const piece = chunk.subarray(start, end);
        if (size + piece.length > maxLineBytes) {
          over = new OversizedLine(maxLineBytes, keepStringBytes);
          for (const part of parts) over.push(part, true);
          parts = [];
          size = 0;
          over.push(piece);
          // Not JSON (or too much of it): its head is all it keeps, known now.
          if (over.gaveUp) batch.push(over.line());
        } else if (piece.length > 0) {
          if (nl !== -1 && size === 0) {
            // A whole line inside this chunk: decode it directly, no copy.
            batch.push({ text: decoder.decode(piece), truncated: false });
            start = nl + 1;
            continue;
          }
          // Copy: the chunk's memory may be reused by the stream after we yield.
          parts.push(Buffer.from(piece));
          size += piece.length;
        }
      } else if (!over.gaveUp) {
        over.push(chunk.subarray(start, end));
        if (over.gaveUp) batch.push(over.line());
      }
      if (nl === -1) break;
      if (over !== null) {
        if (!over.gaveUp) batch.push(over.line());
        over = null;
      } else if (size > 0) batch.push({ text: decoder.decode(take()), truncated: false });
      start = nl + 1;
    }
    if (batch.length > 0) yield batch;
  }
  if (over !== null) {
    if (!over.gaveUp) yield [over.line()];
  } else if (size > 0) yield [{ text: decoder.decode(take()), truncated: false }];
}

/** `splitLineBatches`, one line at a time. */
export async function* splitLines(
  source: AsyncIterable<Buffer>,
  maxLineBytes: number,
  keepStringBytes = keptStringBytes(maxLineBytes),
): AsyncGenerator<SplitLine> {
  for await (const batch of splitLineBatches(source, maxLineBytes, keepStringBytes)) {
    yield* batch;
  }
}
