import type { ServiceImpl } from "@connectrpc/connect";
import type { RunService } from "../../../gen/fermilink/runner/v1/run_pb.js";
import { toRunnerError } from "../../errors/runner-error.js";
import { toConnectError } from "../../errors/status-table.js";
import { runEventToProto } from "../../events/to-proto.js";
import type { StreamObserver } from "../../metrics/metrics.js";
import type { RunPipeline } from "../../run/run-pipeline.js";

/**
 * RunService over Connect, gRPC and gRPC-Web. Failures before the first event
 * become Connect errors (codes from `errors/status-table.ts`); after that the
 * run's own `exit` event says how it ended. A cancelled call aborts
 * `ctx.signal`, which ends the run with reason `client_gone`.
 */
export function createRunService(
  pipeline: RunPipeline,
  observer: StreamObserver,
): ServiceImpl<typeof RunService> {
  return {
    async *run(req, ctx) {
      const arrivedAt = Date.now();
      let started: Awaited<ReturnType<RunPipeline["start"]>>;
      try {
        started = await pipeline.start(
          {
            session_id: req.sessionId,
            user_id: req.userId,
            user_prompt: req.userPrompt,
            package_id: req.packageId,
            sandbox: req.sandbox,
            provider: req.provider,
          },
          { callerSignal: ctx.signal },
        );
      } catch (err) {
        throw toConnectError(toRunnerError(err));
      }
      for await (const event of started.events) {
        if (event.seq === 1) observer.firstEventSent("connect", Date.now() - arrivedAt);
        const bytes =
          event.body.type === "agent"
            ? event.body.raw.length
            : event.body.type === "log"
              ? event.body.text.length
              : 0;
        observer.eventStreamed("connect", event.body.type, bytes);
        yield runEventToProto(event);
      }
    },
  };
}
