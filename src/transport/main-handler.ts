import { createContextValues, type Interceptor } from "@connectrpc/connect";
import { file_fermilink_runner_v1_ops, OpsService } from "../../gen/fermilink/runner/v1/ops_pb.js";
import {
  file_fermilink_runner_v1_packages,
  PackageService,
} from "../../gen/fermilink/runner/v1/packages_pb.js";
import { file_fermilink_runner_v1_run, RunService } from "../../gen/fermilink/runner/v1/run_pb.js";
import { file_grpc_reflection_v1_reflection } from "../../gen/grpc/reflection/v1/reflection_pb.js";
import { file_grpc_reflection_v1alpha_reflection } from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import type { AuthTokens, Caller } from "../auth/auth-tokens.js";
import { toRunnerError } from "../errors/runner-error.js";
import { toConnectError, toHttpError } from "../errors/status-table.js";
import type { Logger } from "../log/logger.js";
import type { StreamObserver } from "../metrics/metrics.js";
import type { PackageCatalog } from "../packages/package-catalog.js";
import type { RunPipeline } from "../run/run-pipeline.js";
import { BODY_TIMEOUT_MS } from "./body-deadline.js";
import { createDirectRunStream } from "./connect/direct-run-stream.js";
import { createConnectNodeHandler } from "./connect/node-adapter.js";
import { createOpsService } from "./connect/ops-service.js";
import { createPackageService } from "./connect/package-service.js";
import { registerReflection } from "./connect/reflection-service.js";
import { createRunService } from "./connect/run-service.js";
import { applyCors } from "./cors.js";
import {
  type AnyRequest,
  type AnyResponse,
  methodAllowed,
  sendJson,
  stopReadingBodyIfUnread,
} from "./http-types.js";
import { handleOpsRoute, OPS_PATHS, type OpsRouteDeps } from "./ops/ops-routes.js";
import { handlePackagesRoute } from "./packages-route.js";
import { requestPath } from "./request-path.js";
import { handleRunRoute } from "./sse/run-route.js";
import { handleRunsRoute, matchRunsRoute, runsRouteMethods } from "./sse/runs-routes.js";
import { AUTH_CALLER, authenticate, RAW_REQUEST_HEADERS } from "./token-guard.js";
import { loadWebUi, serveWebUi } from "./web-ui.js";

/**
 * The main port's request handler: Connect, gRPC and gRPC-Web for the
 * services, and FermiLink's HTTP routes as the fallback for any other path.
 */
/**
 * Routes a trailing slash redirects to, as Starlette's `redirect_slashes`
 * does for FermiLink's: `POST /run/` is a 307 to `/run` (the method and body
 * are kept), not a 404. `/runs…` takes a trailing slash as it is.
 */
const SLASH_REDIRECTS = new Set(["/run", ...OPS_PATHS, "/packages", "/healthz"]);

/** Starlette's RedirectResponse: 307 to the URL on the host the client named, no body. */
function redirectTo(req: AnyRequest, res: AnyResponse, target: string): void {
  const host = req.headers[":authority"] ?? req.headers.host;
  const location = typeof host === "string" && host !== "" ? `http://${host}${target}` : target;
  res.writeHead(307, { location, "content-length": 0 });
  res.end();
}

export function createMainHandler(deps: {
  pipeline: RunPipeline;
  logger: Logger;
  ops: OpsRouteDeps;
  observer: StreamObserver;
  sseHeartbeatMs: number;
  packages: Pick<PackageCatalog, "list">;
  /** Origins allowed to call from a browser (FERMILINK_RUNNER_CORS_ORIGINS); empty = none. */
  corsOrigins: readonly string[];
  /** The main port's bearer tokens (FERMILINK_RUNNER_AUTH_TOKENS); null = no auth. */
  auth: AuthTokens | null;
  /** The browser app's directory (web/). */
  webDir: string;
  /** How long a request's body may take to arrive; BODY_TIMEOUT_MS unless a test shortens it. */
  bodyTimeoutMs?: number;
}) {
  const webUi = loadWebUi(deps.webDir);
  const bodyTimeoutMs = deps.bodyTimeoutMs ?? BODY_TIMEOUT_MS;
  /**
   * The bearer token's caller on a guarded HTTP route (runs and packages), or
   * undefined when the request was refused (answered 401 here).
   */
  const httpCaller = (req: AnyRequest, res: AnyResponse): Caller | null | undefined => {
    try {
      return authenticate(deps.auth, req);
    } catch (err) {
      stopReadingBodyIfUnread(req);
      const { status, body } = toHttpError(toRunnerError(err));
      res.setHeader("www-authenticate", "Bearer");
      sendJson(res, status, body);
      return undefined;
    }
  };
  /**
   * A guarded route's method, then its token: a wrong method gets the 405 it gets with auth
   * off (FastAPI's answer: the route is known, the method is not), and only a call the route
   * would serve is asked for a token. Undefined when the request was answered here.
   */
  const guardedCaller = (
    req: AnyRequest,
    res: AnyResponse,
    allow: "GET, HEAD" | "POST",
  ): Caller | null | undefined =>
    methodAllowed(req, res, allow) ? httpCaller(req, res) : undefined;
  const fermilinkRoutes = (req: AnyRequest, res: AnyResponse) => {
    // Parsed for its query (and to refuse a target no URL can be made of); routed by the path as sent.
    const url = new URL(req.url ?? "/", "http://runner");
    const pathname = requestPath(req.url ?? "/");
    if (pathname === "/run") {
      const caller = guardedCaller(req, res, "POST");
      if (caller === undefined) return;
      handleRunRoute(
        req,
        res,
        deps.pipeline,
        deps.logger,
        deps.observer,
        deps.sseHeartbeatMs,
        caller,
        bodyTimeoutMs,
      ).catch((err: unknown) => {
        deps.logger.error({ err }, "POST /run crashed");
        if (!res.headersSent) sendJson(res, 500, { detail: "Internal runner error." });
        // A response the route ended (an SSE stream closed with its error frame) is left to
        // flush: destroying it would drop what a slow client has not read yet.
        else if (!res.writableEnded) res.destroy();
      });
      return;
    }
    if (OPS_PATHS.has(pathname)) {
      handleOpsRoute(req, res, pathname, url, deps.ops);
      return;
    }
    const runsRoute = matchRunsRoute(pathname);
    if (runsRoute) {
      const caller = guardedCaller(req, res, runsRouteMethods(runsRoute));
      if (caller === undefined) return;
      handleRunsRoute(
        req,
        res,
        url,
        runsRoute,
        {
          pipeline: deps.pipeline,
          logger: deps.logger,
          observer: deps.observer,
          heartbeatMs: deps.sseHeartbeatMs,
        },
        caller,
      ).catch((err: unknown) => {
        deps.logger.error({ err }, "runs route crashed");
        if (!res.headersSent) sendJson(res, 500, { detail: "Internal runner error." });
        else if (!res.writableEnded) res.destroy();
      });
      return;
    }
    if (pathname === "/packages") {
      if (guardedCaller(req, res, "GET, HEAD") === undefined) return;
      handlePackagesRoute(res, deps.packages).catch((err: unknown) => {
        deps.logger.error({ err }, "GET /packages crashed");
        if (!res.headersSent) sendJson(res, 500, { detail: "Internal runner error." });
      });
      return;
    }
    if (serveWebUi(webUi, pathname, req, res)) return;
    if (pathname === "/healthz") {
      if (!methodAllowed(req, res, "GET, HEAD")) return;
      sendJson(res, 200, { status: "ok" });
      return;
    }
    const bare = pathname.replace(/\/+$/, "");
    if (bare !== pathname && SLASH_REDIRECTS.has(bare)) {
      redirectTo(req, res, `${bare}${url.search}`);
      return;
    }
    sendJson(res, 404, { detail: "Not Found" });
  };
  const guardedServices = new Set<string>([RunService.typeName, PackageService.typeName]);
  /** The bearer token on RunService and PackageService (ops keeps its own, reflection is schema only). */
  const authInterceptor: Interceptor = (next) => (req) => {
    if (deps.auth === null || !guardedServices.has(req.service.typeName)) return next(req);
    try {
      const rawHeaders = req.contextValues.get(RAW_REQUEST_HEADERS) ?? [];
      req.contextValues.set(AUTH_CALLER, authenticate(deps.auth, { rawHeaders }));
    } catch (err) {
      return Promise.reject(toConnectError(toRunnerError(err)));
    }
    return next(req);
  };
  const connectHandler = createConnectNodeHandler({
    interceptors: [authInterceptor],
    routes: (router) => {
      router.service(RunService, createRunService(deps.pipeline, deps.observer));
      router.service(OpsService, createOpsService(deps.ops));
      router.service(PackageService, createPackageService(deps.packages));
      registerReflection(
        router,
        [
          file_fermilink_runner_v1_run,
          file_fermilink_runner_v1_ops,
          file_fermilink_runner_v1_packages,
          file_grpc_reflection_v1_reflection,
          file_grpc_reflection_v1alpha_reflection,
        ],
        [
          RunService.typeName,
          OpsService.typeName,
          PackageService.typeName,
          "grpc.reflection.v1.ServerReflection",
          "grpc.reflection.v1alpha.ServerReflection",
        ],
      );
    },
    fallback: fermilinkRoutes,
    // The token guard reads the first of repeated headers (token-guard.ts).
    contextValues: (req) => createContextValues().set(RAW_REQUEST_HEADERS, req.rawHeaders),
    logger: deps.logger,
    bodyTimeoutMs,
  });
  const directRunStream = createDirectRunStream({ ...deps, bodyTimeoutMs });
  return (req: AnyRequest, res: AnyResponse) => {
    try {
      if (applyCors(req, res, deps.corsOrigins)) return;
      if (directRunStream(req, res)) return;
      connectHandler(req, res);
    } catch (err) {
      // A request no URL can be made of (a target like `//[`, a Host like `a b`, no Host on
      // HTTP/1.0) throws from the URL parsing in here or in connect-node: it is the caller's
      // mistake, answered 400, and must never end the process.
      deps.logger.debug({ err, url: req.url }, "malformed request");
      if (!res.headersSent) sendJson(res, 400, { detail: "Bad Request" });
      else res.destroy();
    }
  };
}
