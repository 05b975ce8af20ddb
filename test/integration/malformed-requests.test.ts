/** Requests no URL can be made of are answered 400, and the server goes on serving. */
import http2 from "node:http2";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDualProtocolServer } from "../../src/transport/http-server.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  await server.stop();
});

/** Send raw bytes; the status line of the answer (or "closed"). */
function rawStatus(port: number, request: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1", () => socket.write(request));
    let got = "";
    socket.on("data", (d: Buffer) => {
      got += d.toString("latin1");
    });
    socket.on("error", () => resolve("closed"));
    socket.on("close", () => resolve(got.split("\r\n")[0] || "closed"));
  });
}

const alive = async () => (await fetch(`${server.baseUrl}/healthz`)).status;

describe("malformed requests", () => {
  it.each([
    ["a request target no URL parser takes", "GET //[ HTTP/1.1\r\nHost: x\r\n"],
    ["an absolute target with a bad port", "GET http://a:99999/ HTTP/1.1\r\nHost: x\r\n"],
    [
      "a Connect call with a Host no URL can hold",
      "POST /fermilink.runner.v1.OpsService/GetConcurrency HTTP/1.1\r\nHost: a b\r\nContent-Type: application/json\r\nContent-Length: 2\r\n",
    ],
    [
      "a Connect call over HTTP/1.0 without a Host",
      "POST /fermilink.runner.v1.OpsService/GetConcurrency HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 2\r\n",
    ],
  ])("answers %s with 400 and keeps serving", async (_, head) => {
    const body = head.includes("Content-Length: 2") ? "{}" : "";
    const status = await rawStatus(server.app.port, `${head}Connection: close\r\n\r\n${body}`);
    expect(status).toBe("HTTP/1.1 400 Bad Request");
    expect(await alive()).toBe(200);
  });

  it("answers such a target on the metrics listener with 400, and over HTTP/2 too", async () => {
    const status = await rawStatus(
      server.app.metricsPort,
      "GET //[ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    expect(status).toBe("HTTP/1.1 400 Bad Request");
    const client = http2.connect(server.baseUrl);
    const stream = client.request({ ":path": "//[", ":method": "GET" });
    const h2Status = await new Promise((resolve) =>
      stream.on("response", (h) => resolve(h[":status"])),
    );
    stream.resume();
    await new Promise((r) => stream.on("close", r));
    client.close();
    expect(h2Status).toBe(400);
    expect(await alive()).toBe(200);
  });

  it("closes a connection that never sends a request, or stops in its headers", async () => {
    const front = createDualProtocolServer((_req, res) => res.end("ok"), {
      sniffTimeoutMs: 200,
      headersTimeoutMs: 300,
    });
    const port = await front.listen("127.0.0.1", 0);
    const closedAfter = (bytes: string) =>
      new Promise<string>((resolve) => {
        const t0 = Date.now();
        let got = "";
        const socket = net.connect(port, "127.0.0.1", () => {
          if (bytes !== "") socket.write(bytes);
        });
        socket.on("data", (d: Buffer) => {
          got += d.toString("latin1");
        });
        socket.on("error", () => {});
        socket.on("close", () => resolve(`${Date.now() - t0 < 3000} ${got.split("\r\n")[0]}`));
      });
    const [silent, halfHeaders, halfPreface] = await Promise.all([
      closedAfter(""),
      closedAfter("GET /healthz HTTP/1.1\r\nHost: x\r\n"),
      closedAfter("PRI * HTTP/2.0\r\n"),
    ]);
    expect(silent).toBe("true ");
    expect(halfHeaders).toBe("true HTTP/1.1 408 Request Timeout");
    expect(halfPreface).toBe("true ");
    // A request that completes is answered as usual.
    const ok = await rawStatus(port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    expect(ok).toBe("HTTP/1.1 200 OK");
    await front.close(100);
  });

  it("closes an HTTP/2 connection that has no call for the idle time, but never under a long quiet call", async () => {
    const front = createDualProtocolServer(
      (req, res) => {
        // "/quiet": a call that sends nothing for longer than the idle time, then answers.
        if (req.url === "/quiet") setTimeout(() => res.end("late"), 1500);
        else res.end("ok");
      },
      { h2IdleTimeoutMs: 600 },
    );
    const port = await front.listen("127.0.0.1", 0);
    const session = () => {
      const client = http2.connect(`http://127.0.0.1:${port}`);
      client.on("error", () => {});
      const t0 = Date.now();
      const closedAfter = new Promise<number>((r) =>
        client.once("close", () => r(Date.now() - t0)),
      );
      return { client, closedAfter };
    };
    const call = (client: http2.ClientHttp2Session, path: string) =>
      new Promise<string>((resolve, reject) => {
        const stream = client.request({ ":path": path });
        let body = "";
        stream.setEncoding("utf8");
        stream.on("data", (d: string) => {
          body += d;
        });
        stream.on("end", () => resolve(body));
        stream.on("error", reject);
      });
    try {
      const silent = session(); // never calls
      const quiet = session();
      const busy = session(); // a call every 50 ms, far less than the idle time apart
      const answer = call(quiet.client, "/quiet");
      const busyAnswers: string[] = [];
      for (let i = 0; i < 16; i++) {
        busyAnswers.push(await call(busy.client, "/ok"));
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(busyAnswers).toEqual(Array(16).fill("ok"));
      expect(busy.client.closed).toBe(false);
      expect(await answer).toBe("late");
      // The silent one went after about the idle time; the quiet one only once its call ended.
      const silentMs = await silent.closedAfter;
      expect(silentMs).toBeGreaterThanOrEqual(550);
      expect(silentMs).toBeLessThan(1500);
      expect(await quiet.closedAfter).toBeGreaterThanOrEqual(1500 + 550);
      expect(await busy.closedAfter).toBeGreaterThan(800 + 550);
    } finally {
      await front.close(100);
    }
  });
});
