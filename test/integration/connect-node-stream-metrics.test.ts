/**
 * The events_streamed counter on connect-node's path (JSON, gRPC-Web,
 * compression): an event counts once connect-node took its write (and asked
 * for the next), as on the direct path (direct-run-stream.test.ts), so a
 * client that resets its stream is not counted for an event whose write it
 * never took.
 */
import http2 from "node:http2";
import { create, toBinary } from "@bufbuild/protobuf";
import { afterEach, describe, expect, it } from "vitest";
import { RunRequestSchema, RunService } from "../../gen/fermilink/runner/v1/run_pb.js";
import { envelope } from "../helpers/envelope.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { streamedEvents } from "../helpers/streamed-events.js";

let server: TestServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

/** Events the runner counts as streamed over Connect, all types. */
const streamed = (s: TestServer) => streamedEvents(s, "connect");

describe("connect-node's path counts streamed events", () => {
  it("does not count the event whose write was still waiting when the client reset the stream", async () => {
    server = await startTestServer();
    const s = server;
    const before = await streamed(s);
    // A client that grants no flow-control window: the small meta fits the response's buffer
    // (its write is taken at once), the provider's 70 kB line does not, and waits for good.
    const session = http2.connect(s.baseUrl, { settings: { initialWindowSize: 0 } });
    try {
      const call = session.request({
        ":method": "POST",
        ":path": `/${RunService.typeName}/Run`,
        // gRPC-Web is always served by connect-node.
        "content-type": "application/grpc-web+proto",
      });
      call.on("error", () => {});
      const request = create(RunRequestSchema, {
        sessionId: "metrics-reset",
        userPrompt: "#scenario=huge-line",
      });
      await new Promise<void>((resolve, reject) => {
        call.on("response", () => resolve());
        call.on("close", () => reject(new Error("the call closed before its response head")));
        call.end(envelope(0, toBinary(RunRequestSchema, request)));
      });
      // The run ends by itself (the provider exits 0); its exit event is never asked for.
      for (let i = 0; i < 100 && s.app.pipeline.liveRuns > 0; i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(s.app.pipeline.liveRuns).toBe(0);
      call.close(http2.constants.NGHTTP2_CANCEL);
      await new Promise((r) => call.on("close", r));
      // connect-node ends the handler's generator a little after the reset.
      let delta = 0;
      for (let i = 0; i < 20; i++) {
        await new Promise((r) => setTimeout(r, 50));
        delta = (await streamed(s)) - before;
        if (delta > 1) break;
      }
      // meta only: the agent line's write was never taken (nor the exit event asked for).
      expect(delta).toBe(1);
    } finally {
      session.destroy();
    }
  });
});
