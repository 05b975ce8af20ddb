/**
 * Findings of a contract audit of FermiLink's HTTP face (spec §1, §2, §7.3),
 * probed on a running server.
 */
import http2 from "node:http2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rawRequest } from "../helpers/raw-http.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ FERMILINK_RUNNER_METRICS_TOKEN: "t0k" });
});
afterAll(async () => {
  await server.stop();
});

const token: [string, string][] = [["X-Runner-Metrics-Token", "t0k"]];

describe("routing by the request target as sent", () => {
  // A WHATWG URL reads `//x/...` as a host and resolves dot segments and backslashes: these
  // reached the ops routes (and POST /run) past a proxy that denies `/ops/` by path prefix.
  // Starlette routes the path as sent: 404.
  it.each([
    ["a target that starts with two slashes", "//x/ops/admission"],
    ["a dot segment", "/x/../ops/admission"],
    ["an encoded dot segment", "/x/%2e%2e/ops/admission"],
    ["a backslash", "/ops\\admission"],
    ["a dot segment after an absolute-form authority", "http://runner/x/../ops/admission"],
  ])("answers %s with 404", async (_, target) => {
    const res = await rawRequest(server.app.port, "GET", target, token);
    expect(res.status).toBe(404);
    expect(JSON.parse(res.body)).toEqual({ detail: "Not Found" });
  });

  it("never starts a run for POST //x/run", async () => {
    const res = await rawRequest(
      server.app.port,
      "POST",
      "//x/run",
      [["Content-Type", "application/json"]],
      JSON.stringify({ user_prompt: "hi", session_id: "double-slash" }),
    );
    expect(res.status).toBe(404);
    expect(server.app.pipeline.liveRuns).toBe(0);
  });

  it("still routes the exact path, with a query, a fragment or in absolute form", async () => {
    for (const target of [
      "/ops/admission?user_id=Ann",
      "/ops/admission?user_id=Ann#frag",
      "http://runner/ops/admission?user_id=Ann",
    ]) {
      const res = await rawRequest(server.app.port, "GET", target, token);
      expect(res.status, target).toBe(200);
      expect(JSON.parse(res.body).user_key, target).toBe("user:ann");
    }
  });

  it("routes HTTP/2 :path the same way", async () => {
    const client = http2.connect(server.baseUrl);
    try {
      const status = (path: string) =>
        new Promise<number>((resolve, reject) => {
          const stream = client.request({ ":path": path, "x-runner-metrics-token": "t0k" });
          stream.on("response", (h) => resolve(Number(h[":status"])));
          stream.on("error", reject);
          stream.resume();
        });
      expect(await status("//x/ops/concurrency")).toBe(404);
      expect(await status("/x/../ops/concurrency")).toBe(404);
      expect(await status("/ops/concurrency")).toBe(200);
    } finally {
      client.close();
    }
  });

  it("serves the metrics listener's /metrics only at that path", async () => {
    const port = server.app.metricsPort;
    expect((await rawRequest(port, "GET", "//x/metrics", token)).status).toBe(404);
    expect((await rawRequest(port, "GET", "/x/../metrics", token)).status).toBe(404);
    expect((await rawRequest(port, "GET", "/metrics?x=1", token)).status).toBe(200);
  });
});

describe("GET /ops/admission query", () => {
  // FastAPI reads a scalar query parameter's last value (Starlette's QueryParams keep the last).
  it("takes a repeated user_id or session_id by its last value, as FastAPI does", async () => {
    const ask = async (query: string) => {
      const res = await rawRequest(server.app.port, "GET", `/ops/admission?${query}`, token);
      expect(res.status, query).toBe(200);
      return JSON.parse(res.body).user_key as string;
    };
    expect(await ask("user_id=mallory&user_id=Ann")).toBe("user:ann");
    expect(await ask("session_id=s1&session_id=s2")).toBe("session:s2");
    // A trailing blank one is what FastAPI gets too: no user, so the session key.
    expect(await ask("user_id=ann&user_id=&session_id=s3")).toBe("session:s3");
  });
});

describe("a trailing slash on a route", () => {
  // Starlette's redirect_slashes: FermiLink answers `POST /run/` 307 to `/run`, so a client that
  // follows redirects (307 keeps the method and body) reaches the route; a 404 stopped it.
  it("is a 307 to the route without it, query kept, before any token check", async () => {
    const port = server.app.port;
    for (const [method, target, location] of [
      ["POST", "/run/", "/run"],
      ["POST", "/run///", "/run"],
      ["GET", "/ops/concurrency/?x=1", "/ops/concurrency?x=1"],
      ["GET", "/ops/admission/", "/ops/admission"],
      ["GET", "/healthz/", "/healthz"],
    ] as const) {
      const res = await rawRequest(port, method, target);
      expect([target, res.status, res.headers.location, res.body]).toEqual([
        target,
        307,
        `http://127.0.0.1${location}`,
        "",
      ]);
    }
    // No route without the slash either: still 404.
    expect((await rawRequest(port, "GET", "/nothing/")).status).toBe(404);
    // A client that follows the redirect gets the route.
    const followed = await fetch(`${server.baseUrl}/ops/concurrency/`, {
      headers: { "x-runner-metrics-token": "t0k" },
    });
    expect(followed.status).toBe(200);
    expect(followed.url).toBe(`${server.baseUrl}/ops/concurrency`);
  });
});
