import type { DescMethod } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  type ContextValues,
  createConnectRouter,
  type Interceptor,
} from "@connectrpc/connect";
import type { UniversalHandler, UniversalServerResponse } from "@connectrpc/connect/protocol";
import { parseContentType as connectContentType } from "@connectrpc/connect/protocol-connect";
import { parseContentType as grpcContentType } from "@connectrpc/connect/protocol-grpc";
import { parseContentType as grpcWebContentType } from "@connectrpc/connect/protocol-grpc-web";
import {
  compressionBrotli,
  compressionGzip,
  universalRequestFromNodeRequest,
  universalResponseToNodeResponse,
} from "@connectrpc/connect-node";
import { quotedInput } from "../../errors/runner-error.js";
import type { Logger } from "../../log/logger.js";
import { bodyWithDeadline } from "../body-deadline.js";
import {
  type AnyRequest,
  type AnyResponse,
  declaredBodyBytes,
  stopReadingBody,
  stopReadingBodyIfUnread,
} from "../http-types.js";
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

/** A gRPC or gRPC-Web request (any codec): its clients expect a grpc-status, not an HTTP error. */
const GRPC_CONTENT_TYPE = /^application\/grpc(-web(-text)?)?(\+[^;\s]*)?\s*(;|$)/i;

/**
 * The status a gRPC server gives a procedure it does not serve, in grpc-go's
 * words. connect-node leaves every path it has no handler for to the
 * fallback, whose JSON 404 a gRPC client can only guess a code from (grpcio:
 * "Received http2 header with status: 404"), never learning what was missing.
 */
function unimplemented(path: string, services: ReadonlySet<string>): ConnectError {
  // The path is the caller's, up to node's header limit: quoted whole, it made a grpc-message
  // trailer past what gRPC clients take (grpcio: 8 KiB), and the call ended without its status.
  const m = /^\/([^/]+)\/([^/]+)$/.exec(path);
  if (!m)
    return new ConnectError(
      `malformed method name: ${JSON.stringify(quotedInput(path))}`,
      Code.Unimplemented,
    );
  const [, service = "", method = ""] = m;
  return new ConnectError(
    services.has(service)
      ? `unknown method ${quotedInput(method)} for service ${service}`
      : `unknown service ${quotedInput(service)}`,
    Code.Unimplemented,
  );
}

/**
 * Answer a gRPC or gRPC-Web call to an unknown procedure with its status, as
 * a gRPC server does: HTTP 200, then `grpc-status`. On HTTP/2 it goes in
 * trailers (a gRPC client over h2 reads a status only at the end of the
 * stream); gRPC-Web and HTTP/1.1 have no trailers of their own, so there it
 * is the "trailers-only" answer, the status in the headers.
 */
function answerUnimplemented(req: AnyRequest, res: AnyResponse, error: ConnectError): void {
  const type = (req.headers["content-type"] ?? "").split(";", 1)[0]?.trim() ?? "";
  const status = {
    "grpc-status": String(error.code),
    "grpc-message": encodeURIComponent(error.rawMessage),
  };
  // Nothing of the request is read: on HTTP/2 its upload is stopped once the answer is out.
  stopReadingBodyIfUnread(req);
  if ("stream" in req && !/^application\/grpc-web/i.test(type)) {
    res.writeHead(200, { "content-type": type });
    res.addTrailers(status);
    res.end();
    return;
  }
  res.writeHead(200, { "content-type": type, ...status });
  res.end();
}

/**
 * Whether a body of `type` is one envelope for a call of `methodKind`: a
 * unary or server-streaming call takes exactly one request message, and
 * connect-node reads Connect streaming, gRPC and binary gRPC-Web as
 * envelopes (its own content-type parsers say which protocol it takes a
 * request in). Not a Connect unary body, the message itself, which
 * connect-node refuses from its Content-Length alone; not grpc-web-text,
 * which it refuses 415 unread.
 */
function oneEnvelope(type: string, methodKind: DescMethod["methodKind"]): boolean {
  if (methodKind !== "unary" && methodKind !== "server_streaming") return false;
  const web = grpcWebContentType(type);
  if (web) return !web.text;
  if (grpcContentType(type)) return true;
  return connectContentType(type)?.stream === true && methodKind === "server_streaming";
}

/**
 * The declared size of a call's one request message when it is over the
 * limit and connect-node would refuse it only once it read the envelope's
 * 5-byte prefix (and the guard, up to the limit): it is refused here unread,
 * so a client that asked `Expect: 100-continue` is never told to upload it
 * (http-server.ts). Null otherwise.
 */
function envelopedMessageOverLimit(
  req: AnyRequest,
  methodKind: DescMethod["methodKind"],
): number | null {
  const size = declaredBodyBytes(req);
  if (req.method !== "POST" || size === null || size - 5 <= MAX_REQUEST_BYTES) return null;
  return oneEnvelope(req.headers["content-type"] ?? "", methodKind) ? size - 5 : null;
}

/**
 * A call that takes exactly one request message, whose body must then arrive
 * in time (body-deadline.ts). A bidi stream (reflection) sends its messages
 * when it likes, each within that time of the one before.
 */
function oneMessage(methodKind: DescMethod["methodKind"]): boolean {
  return methodKind === "unary" || methodKind === "server_streaming";
}

/**
 * A request body that fails with `error` at its first read, never reading the
 * request: connect-node answers the error in the call's protocol, as it does
 * the request guard's.
 */
function unreadBody(error: ConnectError): AsyncIterable<Uint8Array> {
  return { [Symbol.asyncIterator]: () => ({ next: () => Promise.reject(error) }) };
}

/**
 * Unary calls end at their deadline, as streams do (run-service.ts):
 * connect-node aborts the call's signal then but waits for a unary
 * implementation to return, so a Cancel waiting out a stubborn process's
 * kill grace answered long after its caller's deadline. The work already
 * asked for goes on (a cancelled run still ends); a call that arrives past
 * its deadline starts nothing.
 */
const unaryDeadline: Interceptor = (next) => (req) => {
  if (req.stream) return next(req);
  const signal = req.signal;
  if (signal.aborted) return Promise.reject(ConnectError.from(signal.reason));
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(ConnectError.from(signal.reason));
    signal.addEventListener("abort", onAbort, { once: true });
    next(req)
      .then(resolve, reject)
      .finally(() => signal.removeEventListener("abort", onAbort));
  });
};

/**
 * connect-node's 405 with the `Allow` it leaves out (RFC 9110 §15.5.6 requires
 * one): the methods the procedure serves. connect-node lists GET for a method
 * declared free of side effects, which its Connect GET serves only when unary.
 */
function withAllow(
  uRes: UniversalServerResponse,
  handler: UniversalHandler,
): UniversalServerResponse {
  const { allowedMethods, method } = handler;
  const allow = allowedMethods.filter((m) => m !== "GET" || method.methodKind === "unary");
  // connect-node answers every 405 with one shared object: a new response, that one left as is.
  const header = new Headers(uRes.header);
  header.set("allow", allow.join(", "));
  return { ...uRes, header };
}

/**
 * connect-node's `connectNodeAdapter` (same router options, paths and
 * fallback), with each request body checked on its way in (request-guard.ts:
 * a message that does not decode is `invalid_argument`, not connect-node's
 * `internal`). A request message is read up to MAX_REQUEST_BYTES, as on the
 * direct path (connect-node's default is 4 GiB, held in memory): a larger one,
 * or a compressed one that inflates past it, is `resource_exhausted`. A
 * deadline longer than a timer holds is shortened to the longest one that does.
 * A gRPC or gRPC-Web call for a procedure not served is `unimplemented`; any
 * other unknown path (the Connect protocol's too: connect-node answers it 404,
 * which Connect clients read as `unimplemented`) goes to the fallback.
 */
export function createConnectNodeHandler(opts: {
  routes: (router: ConnectRouter) => void;
  /** Requests for any other path. */
  fallback: (req: AnyRequest, res: AnyResponse) => void;
  contextValues: (req: AnyRequest) => ContextValues;
  /** Run before the deadline's (the auth guard). */
  interceptors?: readonly Interceptor[];
  logger: Logger;
  /** How long a call's one request message may take to arrive (body-deadline.ts). */
  bodyTimeoutMs: number;
}): (req: AnyRequest, res: AnyResponse) => void {
  const router = createConnectRouter({
    acceptCompression: [compressionGzip, compressionBrotli],
    readMaxBytes: MAX_REQUEST_BYTES,
    interceptors: [...(opts.interceptors ?? []), unaryDeadline],
  });
  opts.routes(router);
  const handlers = new Map(router.handlers.map((h) => [h.requestPath, h]));
  const services = new Set(router.handlers.map((h) => h.service.typeName));
  return (req, res) => {
    const path = (req.url ?? "").split("?", 1)[0] ?? "";
    const handler = handlers.get(path);
    if (!handler) {
      if (GRPC_CONTENT_TYPE.test(req.headers["content-type"] ?? "")) {
        answerUnimplemented(req, res, unimplemented(path, services));
      } else {
        opts.fallback(req, res);
      }
      return;
    }
    const uReq = universalRequestFromNodeRequest(req, res, undefined, opts.contextValues(req));
    clampDeadline(uReq.header);
    // A message over readMaxBytes is refused unread: on HTTP/2 the upload must still end.
    stopReadingBodyIfUnread(req);
    const { input, methodKind } = handler.method;
    const over = envelopedMessageOverLimit(req, methodKind);
    const body =
      over !== null
        ? unreadBody(
            // connect-node's words for the message the one envelope's prefix would declare.
            new ConnectError(
              `message size ${over} is larger than configured readMaxBytes ${MAX_REQUEST_BYTES}`,
              Code.ResourceExhausted,
            ),
          )
        : (uReq.body as AsyncIterable<Uint8Array>);
    // Timed on the guard's output, which passes whole messages only: a call's one message must
    // have arrived in time, a bidi stream's each in time of the one before (half a message does
    // not count). On expiry the rest is never read: HTTP/1.1 closes after the answer, HTTP/2's
    // reset is already asked for (above) and, asked again, finds the stream closed.
    const guarded = bodyWithDeadline(
      req,
      guardRequestBody(body, uReq.header, input, MAX_REQUEST_BYTES, methodKind),
      opts.bodyTimeoutMs,
      () => stopReadingBody(req, res),
      !oneMessage(methodKind),
    );
    handler({ ...uReq, body: guarded })
      .then((uRes) =>
        universalResponseToNodeResponse(uRes.status === 405 ? withAllow(uRes, handler) : uRes, res),
      )
      .catch((reason: unknown) => {
        if (ConnectError.from(reason).code === Code.Aborted) return;
        opts.logger.error(
          { err: reason, rpc: `${handler.service.typeName}/${handler.method.name}` },
          "RPC handler failed",
        );
      });
  };
}
