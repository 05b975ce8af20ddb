/**
 * HEAD on every GET route answers like GET without a body (RFC 9110 §9.3.2):
 * the same status and headers. FastAPI itself answers 405 there (its routes
 * never add HEAD, fastapi#1773), so FermiLink's clients never send it; this
 * serves health checks and link checkers. HEAD on the event stream reports
 * the stream's status and headers and ends at once: it never attaches.
 */
import http2 from "node:http2";
import { afterEach, describe, expect, it } from "vitest";
import type { SqliteRunStore } from "../../src/journal/sqlite-run-store.js";
import { parseSse } from "../helpers/sse-client.js";
import { startGatedTestServer, type TestServer } from "../helpers/start-server.js";

let server: TestServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

/** Status, the headers that describe the body, and the body's length. */
async function answer(url: string, method: "GET" | "HEAD", headers: Record<string, string> = {}) {
  const res = await fetch(url, { method, headers });
  const body = await res.arrayBuffer();
  return {
    status: res.status,
    type: res.headers.get("content-type"),
    length: res.headers.get("content-length"),
    bodyBytes: body.byteLength,
  };
}

describe("HEAD on GET routes", () => {
  it("answers every GET route of both listeners with GET's status and headers and no body", async () => {
    const s = await startGatedTestServer({ FERMILINK_RUNNER_METRICS_TOKEN: "t0k" });
    server = s;
    // One ended run to list, read and replay; one live run held at the gate.
    const ended = await fetch(`${s.baseUrl}/run`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ session_id: "done", user_prompt: "hi" }),
    });
    const endedEvents = [];
    for await (const ev of parseSse(ended.body as ReadableStream<Uint8Array>)) endedEvents.push(ev);
    const runId = JSON.parse(endedEvents[0]?.data ?? "{}").run_id as string;
    const token = { "x-runner-metrics-token": "t0k" };
    const metrics = `http://127.0.0.1:${s.app.metricsPort}`;
    const routes: [string, Record<string, string>][] = [
      [`${s.baseUrl}/healthz`, {}],
      [`${s.baseUrl}/`, {}],
      [`${s.baseUrl}/packages`, {}],
      [`${s.baseUrl}/runs`, {}],
      [`${s.baseUrl}/runs/${runId}`, {}],
      [`${s.baseUrl}/runs/no-such-run`, {}],
      // An ended run read to its end: 204, which tells EventSource to stop.
      [`${s.baseUrl}/runs/${runId}/events?after=${endedEvents.length}`, {}],
      [`${s.baseUrl}/ops/concurrency`, token],
      [`${s.baseUrl}/ops/concurrency.prom`, token],
      [`${s.baseUrl}/ops/admission?user_id=u`, token],
      [`${s.baseUrl}/ops/concurrency`, {}],
      [`${metrics}/metrics`, token],
      [`${metrics}/metrics`, {}],
    ];
    for (const [url, headers] of routes) {
      const get = await answer(url, "GET", headers);
      const head = await answer(url, "HEAD", headers);
      // The metrics text changes between two scrapes (its own counters); its length may too.
      const same = url.endsWith("/metrics") && get.status === 200 ? { length: null } : {};
      expect({ url, ...head, ...same }).toEqual({ url, ...get, bodyBytes: 0, ...same });
      expect(get.status === 200 ? get.bodyBytes : 1).toBeGreaterThan(0);
    }
    // Methods a GET route refuses name HEAD beside GET; POST-only routes refuse HEAD.
    for (const p of [
      "/healthz",
      "/",
      "/app.js",
      "/packages",
      "/runs",
      `/runs/${runId}`,
      `/runs/${runId}/events`,
      "/ops/admission",
    ]) {
      const put = await fetch(`${s.baseUrl}${p}`, { method: "PUT" });
      expect({ p, status: put.status, allow: put.headers.get("allow") }).toEqual({
        p,
        status: 405,
        allow: "GET, HEAD",
      });
      await put.arrayBuffer();
    }
    for (const p of ["/run", `/runs/${runId}/cancel`]) {
      const head = await fetch(`${s.baseUrl}${p}`, { method: "HEAD" });
      expect({ p, status: head.status, allow: head.headers.get("allow") }).toEqual({
        p,
        status: 405,
        allow: "POST",
      });
    }
    const postMetrics = await fetch(`${metrics}/metrics`, { method: "POST" });
    expect([postMetrics.status, postMetrics.headers.get("allow")]).toEqual([405, "GET, HEAD"]);
    await postMetrics.arrayBuffer();
  });

  it("gives the event stream's status and headers and ends at once, on HTTP/1.1 and HTTP/2, live run or not", async () => {
    const s = await startGatedTestServer();
    server = s;
    const caller = await fetch(`${s.baseUrl}/run`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-fermilink-user-id": "ann" },
      body: JSON.stringify({ session_id: "live", user_prompt: "#scenario=gate", user_id: "ann" }),
    });
    const events = parseSse(caller.body as ReadableStream<Uint8Array>)[Symbol.asyncIterator]();
    const meta = await events.next();
    const runId = JSON.parse(meta.value?.data ?? "{}").run_id as string;
    expect(s.app.pipeline.isLive(runId)).toBe(true);
    const url = `${s.baseUrl}/runs/${runId}/events?user_id=ann`;
    // A GET on a live run would stream until it ends; HEAD answers right away.
    const head = await fetch(url, { method: "HEAD", signal: AbortSignal.timeout(2000) });
    expect(head.status).toBe(200);
    expect(head.headers.get("content-type")).toBe("text/event-stream; charset=utf-8");
    expect(head.headers.get("cache-control")).toBe("no-cache");
    expect((await head.arrayBuffer()).byteLength).toBe(0);
    // Another user's HEAD is refused as its GET would be, and an unknown run is 404.
    const other = await fetch(`${s.baseUrl}/runs/${runId}/events?user_id=bob`, { method: "HEAD" });
    expect(other.status).toBe(404);
    expect((await fetch(`${s.baseUrl}/runs/nope/events`, { method: "HEAD" })).status).toBe(404);
    // HTTP/2: the stream ends with the headers.
    const session = http2.connect(s.baseUrl);
    try {
      const h2 = await new Promise<{ status: unknown; type: unknown; bytes: number }>(
        (resolve, reject) => {
          const stream = session.request({
            ":method": "HEAD",
            ":path": new URL(url).pathname + new URL(url).search,
          });
          let status: unknown;
          let type: unknown;
          let bytes = 0;
          stream.on("response", (h) => {
            status = h[":status"];
            type = h["content-type"];
          });
          stream.on("data", (c: Buffer) => {
            bytes += c.length;
          });
          stream.on("end", () => resolve({ status, type, bytes }));
          stream.on("error", reject);
          setTimeout(() => reject(new Error("HEAD over HTTP/2 did not end")), 2000).unref();
        },
      );
      expect(h2).toEqual({ status: 200, type: "text/event-stream; charset=utf-8", bytes: 0 });
    } finally {
      session.close();
    }
    await (s as Awaited<ReturnType<typeof startGatedTestServer>>).openGate();
    for (;;) if ((await events.next()).done) break;
    // Once the run ended: HEAD from the start is 200 (there is something to replay), at the end 204.
    expect((await fetch(url, { method: "HEAD" })).status).toBe(200);
    const { lastSeq } = s.app.pipeline.getRun(runId, { userId: "ann" });
    expect((await fetch(`${url}&after=${lastSeq}`, { method: "HEAD" })).status).toBe(204);
  });

  it("finds a live run as GET does when the store has no row for it yet", async () => {
    const s = await startGatedTestServer();
    server = s;
    const caller = await fetch(`${s.baseUrl}/run`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        session_id: "unstored",
        user_prompt: "#scenario=gate",
        user_id: "ann",
      }),
    });
    const events = parseSse(caller.body as ReadableStream<Uint8Array>)[Symbol.asyncIterator]();
    const runId = JSON.parse((await events.next()).value?.data ?? "{}").run_id as string;
    // The store lost the run's row (its first write refused, a full disk): the run goes on.
    const store = (s.app.pipeline as unknown as { deps: { store: SqliteRunStore } }).deps.store;
    const realGetRun = store.getRun.bind(store);
    store.getRun = (id) => (id === runId ? null : realGetRun(id));
    try {
      const url = `${s.baseUrl}/runs/${runId}/events?user_id=ann`;
      const get = new AbortController();
      const getRes = await fetch(url, { signal: get.signal });
      get.abort();
      const head = await fetch(url, { method: "HEAD" });
      expect([getRes.status, head.status]).toEqual([200, 200]);
      // Another user's HEAD is still refused as its GET is.
      const other = `${s.baseUrl}/runs/${runId}/events?user_id=bob`;
      const [otherGet, otherHead] = await Promise.all([
        fetch(other).then((r) => r.status),
        fetch(other, { method: "HEAD" }).then((r) => r.status),
      ]);
      expect([otherGet, otherHead]).toEqual([404, 404]);
    } finally {
      store.getRun = realGetRun;
    }
    await s.openGate();
    for (;;) if ((await events.next()).done) break;
  });
});
