import type { ServiceImpl } from "@connectrpc/connect";
import type { RunService } from "../../../gen/fermilink/runner/v1/run_pb.js";
import { toRunnerError } from "../../errors/runner-error.js";
import { toConnectError } from "../../errors/status-table.js";
import { runEventToProto } from "../../events/to-proto.js";
import type { RunPipeline } from "../../run/run-pipeline.js";

/**
 * RunService over Connect, gRPC and gRPC-Web. Failures before the first event
 * become Connect errors (codes from `errors/status-table.ts`); after that the
 * run's own `exit` event says how it ended. A cancelled call aborts
 * `ctx.signal`, which ends the run with reason `client_gone`.
 */
export function createRunService(pipeline: RunPipeline): ServiceImpl<typeof RunService> {
  return {
    async *run(req, ctx) {
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
      for await (const event of started.events) yield runEventToProto(event);
    },
  };
}
