import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  GetAdmissionResponseSchema,
  GetConcurrencyResponseSchema,
  type OpsService,
} from "../../../gen/fermilink/runner/v1/ops_pb.js";
import { toRunnerError } from "../../errors/runner-error.js";
import { toConnectError } from "../../errors/status-table.js";
import type { OpsRouteDeps } from "../ops/ops-routes.js";
import { admissionSnapshot, concurrencySnapshot } from "../ops/ops-snapshots.js";
import {
  checkMetricsToken,
  METRICS_TOKEN_HEADER,
  presentedToken,
  RAW_REQUEST_HEADERS,
} from "../token-guard.js";

function guard(deps: OpsRouteDeps, ctx: HandlerContext): void {
  try {
    const rawHeaders = ctx.values.get(RAW_REQUEST_HEADERS);
    // The first of repeated headers, as on the HTTP routes (requestHeader joins them).
    const token = rawHeaders
      ? presentedToken({ rawHeaders })
      : ctx.requestHeader.get(METRICS_TOKEN_HEADER);
    checkMetricsToken(deps.metricsToken, token);
  } catch (err) {
    throw toConnectError(toRunnerError(err));
  }
}

/** OpsService: the typed twin of FermiLink's `/ops/concurrency` and `/ops/admission`. */
export function createOpsService(deps: OpsRouteDeps): ServiceImpl<typeof OpsService> {
  return {
    getConcurrency(_req, ctx) {
      guard(deps, ctx);
      const now = deps.now();
      const c = concurrencySnapshot(deps.admission, now);
      return create(GetConcurrencyResponseSchema, {
        activeTotal: c.active_total,
        globalLimit: c.global_limit,
        globalUtilization: c.global_utilization,
        pendingTotal: c.pending_total,
        queueBounded: c.queue_bounded,
        queueCapacity: c.queue_capacity ?? undefined,
        queueUtilization: c.queue_utilization ?? undefined,
        perUserLimit: c.per_user_limit,
        timestamp: timestampFromMs(now),
      });
    },
    getAdmission(req, ctx) {
      guard(deps, ctx);
      const now = deps.now();
      const a = admissionSnapshot(deps.admission, req.userId, req.sessionId, now);
      return create(GetAdmissionResponseSchema, {
        userKey: a.user_key,
        canRunNow: a.can_run_now,
        perUserActive: a.per_user_active,
        perUserPending: a.per_user_pending,
        activeTotal: a.active_total,
        pendingTotal: a.pending_total,
        globalLimit: a.global_limit,
        perUserLimit: a.per_user_limit,
        timestamp: timestampFromMs(now),
      });
    },
  };
}
