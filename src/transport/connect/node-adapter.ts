import {
  Code,
  ConnectError,
  type ConnectRouter,
  type ContextValues,
  createConnectRouter,
} from "@connectrpc/connect";
import {
  compressionBrotli,
  compressionGzip,
  universalRequestFromNodeRequest,
  universalResponseToNodeResponse,
} from "@connectrpc/connect-node";
import type { Logger } from "../../log/logger.js";
import { type AnyRequest, type AnyResponse, stopReadingBodyIfUnread } from "../http-types.js";
import { guardRequestBody, MAX_REQUEST_BYTES } from "./request-guard.js";

/**
 * The longest delay `setTimeout` keeps: connect-node arms the call's deadline
 * with it, and Node fires a longer one after 1 ms (TimeoutOverflowWarning).
 */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Units of a gRPC timeout header, in ms. */
const GRPC_TIMEOUT_UNIT_MS: Readonly<Record<string, number>> = {
  H: 3_600_000,
  M: 60_000,
  S: 1000,
  m: 1,
  u: 1e-3,
  n: 1e-6,
};

/**
 * A deadline beyond MAX_TIMER_MS (a gRPC client's 30-day or "no" deadline:
 * grpc-timeout allows 8 digits of hours, connect-timeout-ms 10 digits) would
 * end the call at once; it becomes the longest one a timer holds (~24.8 days,
 * far past any run's maximum runtime). Malformed values are left for
 * connect-node to refuse.
 */
function clampDeadline(header: Headers): void {
  const grpc = /^(\d{1,8})([HMSmun])$/.exec(header.get("grpc-timeout") ?? "");
  if (grpc && Number(grpc[1]) * (GRPC_TIMEOUT_UNIT_MS[grpc[2] ?? ""] ?? 0) > MAX_TIMER_MS) {
    // 8 digits at most: whole seconds, just under MAX_TIMER_MS.
    header.set("grpc-timeout", `${Math.floor(MAX_TIMER_MS / 1000)}S`);
  }
  const connect = /^\d{1,10}$/.exec(header.get("connect-timeout-ms") ?? "");
  if (connect && Number(connect[0]) > MAX_TIMER_MS) {
    header.set("connect-timeout-ms", String(MAX_TIMER_MS));
  }
}

/**
 * connect-node's `connectNodeAdapter` (same router options, paths and
 * fallback), with each request body checked on its way in (request-guard.ts:
 * a message that does not decode is `invalid_argument`, not connect-node's
 * `internal`). A request message is read up to MAX_REQUEST_BYTES, as on the
 * direct path (connect-node's default is 4 GiB, held in memory): a larger one,
 * or a compressed one that inflates past it, is `resource_exhausted`. A
 * deadline longer than a timer holds is shortened to the longest one that does.
 */
export function createConnectNodeHandler(opts: {
  routes: (router: ConnectRouter) => void;
  /** Requests for any other path. */
  fallback: (req: AnyRequest, res: AnyResponse) => void;
  contextValues: (req: AnyRequest) => ContextValues;
  logger: Logger;
}): (req: AnyRequest, res: AnyResponse) => void {
  const router = createConnectRouter({
    acceptCompression: [compressionGzip, compressionBrotli],
    readMaxBytes: MAX_REQUEST_BYTES,
  });
  opts.routes(router);
  const handlers = new Map(router.handlers.map((h) => [h.requestPath, h]));
  return (req, res) => {
    const handler = handlers.get((req.url ?? "").split("?", 1)[0] ?? "");
    if (!handler) {
      opts.fallback(req, res);
      return;
    }
    const uReq = universalRequestFromNodeRequest(req, res, undefined, opts.contextValues(req));
    clampDeadline(uReq.header);
    // A message over readMaxBytes is refused unread: on HTTP/2 the upload must still end.
    stopReadingBodyIfUnread(req);
    const body = uReq.body as AsyncIterable<Uint8Array>;
    const { input, methodKind } = handler.method;
    const guarded = guardRequestBody(body, uReq.header, input, MAX_REQUEST_BYTES, methodKind);
    handler({ ...uReq, body: guarded })
      .then((uRes) => universalResponseToNodeResponse(uRes, res))
      .catch((reason: unknown) => {
        if (ConnectError.from(reason).code === Code.Aborted) return;
        opts.logger.error(
          { err: reason, rpc: `${handler.service.typeName}/${handler.method.name}` },
          "RPC handler failed",
        );
      });
  };
}
