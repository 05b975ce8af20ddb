import { cors as connectCors } from "@connectrpc/connect";
import type { AnyRequest, AnyResponse } from "./http-types.js";

/** Headers browsers may send beyond Connect's: SSE resume, the caller's user id and tokens. */
const EXTRA_ALLOWED_HEADERS = [
  "Authorization",
  "Last-Event-ID",
  "X-Fermilink-User-Id",
  "X-Runner-Metrics-Token",
];

/**
 * One serialized origin (RFC 6454), or "null": what a browser sends. Node
 * joins repeated Origin headers with ", ", which under `*` must not be
 * echoed back as a grant.
 */
const ONE_ORIGIN = /^(?:null|[a-z][a-z0-9+.-]*:\/\/[^\s,/?#]+)$/i;

/**
 * CORS for browser clients (Connect-Web, EventSource) on other origins: off
 * unless FERMILINK_RUNNER_CORS_ORIGINS lists the origin (or is `*`). Returns
 * true when the request was a preflight and has been answered.
 */
export function applyCors(
  req: AnyRequest,
  res: AnyResponse,
  allowedOrigins: readonly string[],
): boolean {
  const origin = req.headers.origin;
  if (allowedOrigins.length === 0 || typeof origin !== "string") return false;
  const allowed =
    (allowedOrigins.includes("*") && ONE_ORIGIN.test(origin)) || allowedOrigins.includes(origin);
  res.setHeader("vary", "Origin");
  if (!allowed) return false;
  res.setHeader("access-control-allow-origin", origin);
  res.setHeader("access-control-expose-headers", connectCors.exposedHeaders.join(", "));
  if (req.method === "OPTIONS" && req.headers["access-control-request-method"]) {
    res.writeHead(204, {
      "access-control-allow-methods": connectCors.allowedMethods.join(", "),
      "access-control-allow-headers": [
        ...connectCors.allowedHeaders,
        ...EXTRA_ALLOWED_HEADERS,
      ].join(", "),
      "access-control-max-age": "7200",
    });
    res.end();
    return true;
  }
  return false;
}
