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

/**
 * Split a byte stream into lines on `\n` only (spec §2.1: a `\r` stays in the
 * text), skip empty lines, emit a final partial line at EOF. No line is held
 * beyond `maxLineBytes`: a longer one yields its first `maxLineBytes` bytes
 * (cut at a code point boundary) with `truncated: true` and the rest up to the
 * next `\n` is discarded. Bytes are decoded per line with U+FFFD for invalid
 * sequences. Yields the lines each chunk completes as one batch (one await per
 * chunk, not per line). Pull-based: nothing is read while the consumer does
 * not pull, which is the backpressure that pauses the child's pipe.
 */
export async function* splitLineBatches(
  source: AsyncIterable<Buffer>,
  maxLineBytes: number,
): AsyncGenerator<SplitLine[]> {
  let parts: Buffer[] = [];
  let size = 0;
  let discarding = false;
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
      if (!discarding) {
        const piece = chunk.subarray(start, end);
        if (size + piece.length > maxLineBytes) {
          parts.push(piece.subarray(0, maxLineBytes - size));
          size = maxLineBytes;
          const whole = take();
          batch.push({
            text: decoder.decode(whole.subarray(0, completeUtf8Prefix(whole))),
            truncated: true,
          });
          discarding = true;
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
      }
      if (nl === -1) break;
      if (discarding) discarding = false;
      else if (size > 0) batch.push({ text: decoder.decode(take()), truncated: false });
      start = nl + 1;
    }
    if (batch.length > 0) yield batch;
  }
  if (!discarding && size > 0) yield [{ text: decoder.decode(take()), truncated: false }];
}

/** `splitLineBatches`, one line at a time. */
export async function* splitLines(
  source: AsyncIterable<Buffer>,
  maxLineBytes: number,
): AsyncGenerator<SplitLine> {
  for await (const batch of splitLineBatches(source, maxLineBytes)) yield* batch;
}
