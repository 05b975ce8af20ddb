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
 * connect-node's `connectNodeAdapter` (same router options, paths and
 * fallback), with each request body checked on its way in (request-guard.ts:
 * a message that does not decode is `invalid_argument`, not connect-node's
 * `internal`). A request message is read up to MAX_REQUEST_BYTES, as on the
 * direct path (connect-node's default is 4 GiB, held in memory): a larger one,
 * or a compressed one that inflates past it, is `resource_exhausted`.
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
    // A message over readMaxBytes is refused unread: on HTTP/2 the upload must still end.
    stopReadingBodyIfUnread(req);
    const body = uReq.body as AsyncIterable<Uint8Array>;
    handler({ ...uReq, body: guardRequestBody(body, uReq.header, handler.method.input) })
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
