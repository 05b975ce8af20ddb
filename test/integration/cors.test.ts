import net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../../src/config/load-config.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";

let server: TestServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

const preflight = (baseUrl: string, origin: string) =>
  fetch(`${baseUrl}/fermilink.runner.v1.RunService/Run`, {
    method: "OPTIONS",
    headers: {
      origin,
      "access-control-request-method": "POST",
      "access-control-request-headers": "content-type,connect-protocol-version",
    },
  });

describe("CORS for browser clients on other origins", () => {
  it("is off by default: no grant for any origin", async () => {
    server = await startTestServer();
    const res = await preflight(server.baseUrl, "http://app.example");
    expect(res.headers.get("access-control-allow-origin")).toBeNull();
    const get = await fetch(`${server.baseUrl}/healthz`, {
      headers: { origin: "http://app.example" },
    });
    expect(get.headers.get("access-control-allow-origin")).toBeNull();
  });

  it("grants exactly the listed origins, preflight included", async () => {
    server = await startTestServer({
      FERMILINK_RUNNER_CORS_ORIGINS: "http://app.example, https://ui.example:8443",
    });
    const ok = await preflight(server.baseUrl, "https://ui.example:8443");
    expect(ok.status).toBe(204);
    expect(ok.headers.get("access-control-allow-origin")).toBe("https://ui.example:8443");
    expect(ok.headers.get("access-control-allow-methods")).toContain("POST");
    expect(ok.headers.get("access-control-allow-headers")).toContain("Connect-Protocol-Version");
    expect(ok.headers.get("access-control-allow-headers")).toContain("Last-Event-ID");
    expect(ok.headers.get("access-control-allow-headers")).toContain("Authorization");
    const other = await preflight(server.baseUrl, "http://evil.example");
    expect(other.headers.get("access-control-allow-origin")).toBeNull();
    const get = await fetch(`${server.baseUrl}/packages`, {
      headers: { origin: "http://app.example" },
    });
    expect(get.headers.get("access-control-allow-origin")).toBe("http://app.example");
    expect(get.headers.get("access-control-expose-headers")).toContain("Grpc-Status");
  });

  it("under `*` grants any one origin, but never echoes repeated Origin headers (node joins them)", async () => {
    server = await startTestServer({ FERMILINK_RUNNER_CORS_ORIGINS: "*" });
    const get = await fetch(`${server.baseUrl}/healthz`, {
      headers: { origin: "http://any.example:3000" },
    });
    expect(get.headers.get("access-control-allow-origin")).toBe("http://any.example:3000");
    const port = new URL(server.baseUrl).port;
    const head = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(Number(port), "127.0.0.1", () =>
        socket.write(
          "GET /healthz HTTP/1.1\r\nHost: x\r\nOrigin: http://a.example\r\nOrigin: http://b.example\r\nConnection: close\r\n\r\n",
        ),
      );
      let got = "";
      socket.on("data", (d: Buffer) => {
        got += d.toString("latin1");
      });
      socket.on("error", reject);
      socket.on("close", () => resolve(got.split("\r\n\r\n")[0] ?? ""));
    });
    expect(head).toMatch(/^HTTP\/1\.1 200 /);
    expect(head.toLowerCase()).not.toContain("access-control-allow-origin");
  });

  it("refuses a malformed origin at start-up with a message naming the variable", () => {
    expect(() =>
      loadConfig({ FERMILINK_RUNNER_CORS_ORIGINS: "http://ok.example,app.example/path/" }),
    ).toThrow(ConfigError);
    expect(() => loadConfig({ FERMILINK_RUNNER_CORS_ORIGINS: "http://ok.example/" })).toThrow(
      /FERMILINK_RUNNER_CORS_ORIGINS/,
    );
    expect(loadConfig({ FERMILINK_RUNNER_CORS_ORIGINS: "*" }).server.corsOrigins).toEqual(["*"]);
  });
});
