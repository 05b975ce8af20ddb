import type { AdmissionController } from "../../admission/admission-controller.js";
import { toRunnerError } from "../../errors/runner-error.js";
import { toHttpError } from "../../errors/status-table.js";
import {
  type AnyRequest,
  type AnyResponse,
  methodAllowed,
  sendJson,
  sendJsonText,
} from "../http-types.js";
import { lastQueryValue } from "../request-path.js";
import { checkMetricsToken, presentedToken } from "../token-guard.js";
import {
  admissionSnapshot,
  concurrencyJsonText,
  concurrencyPrometheusText,
} from "./ops-snapshots.js";

/** Dependencies of FermiLink's `/ops/*` routes. */
export interface OpsRouteDeps {
  admission: AdmissionController;
  metricsToken: string | null;
  now: () => number;
}

/** The paths this module answers. */
export const OPS_PATHS = new Set(["/ops/concurrency", "/ops/concurrency.prom", "/ops/admission"]);

/**
 * FermiLink's `GET /ops/concurrency`, `/ops/concurrency.prom` and
 * `/ops/admission` (spec §1.2–1.4), token-guarded (§7.3). `path` is the
 * one of OPS_PATHS the router matched (the path as sent); `url` gives the query.
 */
export function handleOpsRoute(
  req: AnyRequest,
  res: AnyResponse,
  path: string,
  url: URL,
  deps: OpsRouteDeps,
): void {
  if (!methodAllowed(req, res, "GET, HEAD")) return;
  try {
    checkMetricsToken(deps.metricsToken, presentedToken(req));
  } catch (err) {
    const { status, body } = toHttpError(toRunnerError(err));
    sendJson(res, status, body);
    return;
  }
  const now = deps.now();
  switch (path) {
    case "/ops/concurrency":
      sendJsonText(res, 200, concurrencyJsonText(deps.admission, now));
      return;
    case "/ops/admission":
      sendJson(
        res,
        200,
        admissionSnapshot(
          deps.admission,
          lastQueryValue(url, "user_id"),
          lastQueryValue(url, "session_id"),
          now,
        ),
      );
      return;
    default: {
      const text = concurrencyPrometheusText(deps.admission, now);
      res.writeHead(200, {
        "content-type": "text/plain; charset=utf-8",
        "content-length": Buffer.byteLength(text),
      });
      res.end(text);
    }
  }
}
