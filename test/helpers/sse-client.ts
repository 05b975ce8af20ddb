/** One parsed SSE event (data lines joined with "\n", as the SSE spec and FermiLink's web do). */
export interface SseEvent {
  event: string;
  id: string | null;
  data: string;
}

/** Everything a POST /run answered: status, headers, parsed events and raw comment lines. */
export interface SseResult {
  status: number;
  headers: Headers;
  events: SseEvent[];
  comments: string[];
  /** The body as text when the response was not an event stream. */
  text: string;
}

/**
 * Incremental SSE parser (WHATWG rules: CR, LF and CRLF end lines; a blank
 * line dispatches; `:` lines are comments). Yields events as they arrive.
 */
export async function* parseSse(
  body: ReadableStream<Uint8Array>,
  onComment?: (c: string) => void,
): AsyncGenerator<SseEvent> {
  const decoder = new TextDecoder();
  let buf = "";
  let event = "";
  let id: string | null = null;
  let data: string[] = [];
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
    buf += decoder.decode(chunk, { stream: true });
    for (;;) {
      const m = /\r\n|\r|\n/.exec(buf);
      if (!m) break;
      // A lone CR at the end may be the first half of CRLF: wait for more.
      if (m[0] === "\r" && m.index === buf.length - 1) break;
      const line = buf.slice(0, m.index);
      buf = buf.slice(m.index + m[0].length);
      if (line === "") {
        if (data.length > 0) yield { event: event || "message", id, data: data.join("\n") };
        event = "";
        data = [];
        continue;
      }
      if (line.startsWith(":")) {
        onComment?.(line.slice(1).trim());
        continue;
      }
      const colon = line.indexOf(":");
      const field = colon === -1 ? line : line.slice(0, colon);
      let value = colon === -1 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
      else if (field === "id") id = value;
    }
  }
}

/** POST a JSON body to /run and collect the whole answer. */
export async function postRun(
  baseUrl: string,
  body: unknown,
  init: { signal?: AbortSignal; rawBody?: string } = {},
): Promise<SseResult> {
  const res = await fetch(`${baseUrl}/run`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: init.rawBody ?? JSON.stringify(body),
    signal: init.signal ?? null,
  });
  const result: SseResult = {
    status: res.status,
    headers: res.headers,
    events: [],
    comments: [],
    text: "",
  };
  if (!(res.headers.get("content-type") ?? "").startsWith("text/event-stream") || !res.body) {
    result.text = await res.text();
    return result;
  }
  for await (const ev of parseSse(res.body, (c) => result.comments.push(c))) result.events.push(ev);
  return result;
}

/**
 * POST a run and read its stream up to its first agent event (the provider is
 * running then); `rest` is the rest of the stream, `runId` read from `meta`.
 */
export async function startSseRun(
  baseUrl: string,
  body: unknown,
): Promise<{ runId: string; rest: AsyncIterator<SseEvent> }> {
  const res = await fetch(`${baseUrl}/run`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const rest = parseSse(res.body as ReadableStream<Uint8Array>)[Symbol.asyncIterator]();
  let runId = "";
  for (let n = await rest.next(); !n.done; n = await rest.next()) {
    if (n.value.event === "meta") runId = JSON.parse(n.value.data).run_id;
    if (n.value.event === "agent") break;
  }
  return { runId, rest };
}

/** Read a stream to its end; the last event's data ("" if none). */
export async function lastData(events: AsyncIterator<SseEvent>): Promise<string> {
  let last = "";
  for (let n = await events.next(); !n.done; n = await events.next()) last = n.value.data;
  return last;
}

/** Every line break of Python's `str.splitlines` (what httpx's `aiter_lines` splits at). */
// biome-ignore lint/suspicious/noControlCharactersInRegex: VT, FF and U+001C–U+001E are line breaks to Python.
export const PY_BREAKS = /\r\n|[\n\r\u000b\u000c\u001c-\u001e\u0085\u2028\u2029]/;

/**
 * The stream as FermiLink's web client (`_stream_runner`, spec §2.4) reads it: httpx's
 * `aiter_lines`, `event:` and `data:` taken stripped, other lines (`id:`, comments) ignored,
 * data lines joined with "\n", an event yielded on a blank line when it has data, and once
 * more at the end of the body.
 */
export function parseLikeFermiLink(text: string): { event: string; data: string }[] {
  const out: { event: string; data: string }[] = [];
  let event = "";
  let data: string[] = [];
  const lines = text.split(PY_BREAKS);
  if (lines.at(-1) === "") lines.pop();
  for (const line of lines) {
    if (line === "") {
      if (data.length > 0) out.push({ event: event || "message", data: data.join("\n") });
      event = "";
      data = [];
    } else if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).trim());
  }
  if (data.length > 0) out.push({ event: event || "message", data: data.join("\n") });
  return out;
}
