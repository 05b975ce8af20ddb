import http from "node:http";
import type { Registry } from "prom-client";
import { toRunnerError } from "../errors/runner-error.js";
import { toHttpError } from "../errors/status-table.js";
import { methodAllowed } from "./http-types.js";
import { requestPath } from "./request-path.js";
import { checkMetricsToken, presentedToken } from "./token-guard.js";

/** The separate Prometheus listener (design §1): `GET /metrics` (and HEAD) and nothing else. */
export interface MetricsServer {
  readonly port: number;
  close(): Promise<void>;
}

/**
 * Serve the registry on its own port, so scraping never competes with the
 * run port's routing and can be firewalled separately. Guarded by
 * FERMILINK_RUNNER_METRICS_TOKEN when it is set (header or bearer token).
 */
export async function startMetricsServer(
  registry: Registry,
  opts: { host: string; port: number; token: string | null },
): Promise<MetricsServer> {
  const server = http.createServer((req, res) => {
    const send = (status: number, type: string, body: string) => {
      res.writeHead(status, {
        "content-type": type,
        "content-length": Buffer.byteLength(body),
      });
      res.end(req.method === "HEAD" ? undefined : body);
    };
    let path: string;
    try {
      // Throws on a target no URL can be made of (400); routing uses the path as sent.
      new URL(req.url ?? "/", "http://metrics");
      path = requestPath(req.url ?? "/");
    } catch {
      return send(400, "application/json", '{"detail":"Bad Request"}');
    }
    if (path !== "/metrics") return send(404, "application/json", '{"detail":"Not Found"}');
    if (!methodAllowed(req, res, "GET, HEAD")) return;
    try {
      // Prometheus' scrape config speaks `authorization: Bearer <token>`.
      checkMetricsToken(opts.token, presentedToken(req, { bearer: true }));
    } catch (err) {
      const { status, body } = toHttpError(toRunnerError(err));
      return send(status, "application/json", JSON.stringify(body));
    }
    registry.metrics().then(
      (text) => send(200, registry.contentType, text),
      (err: unknown) => send(500, "text/plain", `metrics failed: ${String(err)}`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const addr = server.address();
  return {
    port: typeof addr === "object" && addr ? addr.port : opts.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
