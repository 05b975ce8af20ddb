import { Code, ConnectError, createClient } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import { ExitReason, type RunEvent, RunService } from "../../gen/fermilink/runner/v1/run_pb.js";
import { collect } from "../helpers/collect.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";

let server: TestServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

const transports = {
  "Connect protocol over HTTP/1.1": (baseUrl: string) =>
    createConnectTransport({ baseUrl, httpVersion: "1.1" }),
  // JSON has no unknown fields: line events must not take the precomputed-bytes path here.
  "Connect protocol with the JSON codec": (baseUrl: string) =>
    createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: false }),
  "gRPC over HTTP/2 (h2c)": (baseUrl: string) => createGrpcTransport({ baseUrl }),
  "gRPC-Web over HTTP/1.1": (baseUrl: string) =>
    createGrpcWebTransport({ baseUrl, httpVersion: "1.1" }),
};

describe.each(Object.entries(transports))("RunService.Run via %s", (_name, makeTransport) => {
  it("streams typed events: meta first, agent lines with typed readings, exit last", async () => {
    server = await startTestServer();
    const client = createClient(RunService, makeTransport(server.baseUrl));
    const events = await collect(
      client.run({ sessionId: "c1", userPrompt: "hello typed", userId: "bob" }),
    );
    expect(events[0]?.event.case).toBe("meta");
    expect(events.at(-1)?.event.case).toBe("exit");
    expect(events.map((e) => Number(e.seq))).toEqual(events.map((_, i) => i + 1));
    const runIds = new Set(events.map((e) => e.runId));
    expect(runIds.size).toBe(1);
    const meta = events[0]?.event.case === "meta" ? events[0].event.value : undefined;
    expect(meta?.sessionId).toBe("c1");
    expect(meta?.agent?.provider).toBe("codex");
    const messages = events.flatMap((e) =>
      e.event.case === "agent"
        ? e.event.value.items.flatMap((i) => (i.kind.case === "message" ? [i.kind.value.text] : []))
        : [],
    );
    expect(messages.some((t) => t.includes("hello typed"))).toBe(true);
    const raw = events.flatMap((e) => (e.event.case === "agent" ? [e.event.value.raw] : []));
    expect(raw.every((r) => JSON.parse(r) !== null)).toBe(true);
    expect(events.some((e) => e.event.case === "log")).toBe(true);
    const exit = events.at(-1)?.event;
    expect(exit?.case === "exit" && exit.value.reason).toBe(ExitReason.COMPLETED);
    expect(exit?.case === "exit" && exit.value.returnCode).toBe(0);
  });

  it("maps bad input to Connect codes before any event", async () => {
    server = await startTestServer();
    const client = createClient(RunService, makeTransport(server.baseUrl));
    const cases: [Parameters<typeof client.run>[0], Code][] = [
      [{ userPrompt: "" }, Code.InvalidArgument],
      [{ userPrompt: "x".repeat(10_001) }, Code.InvalidArgument],
      [{ userPrompt: "hi", sessionId: "../x" }, Code.InvalidArgument],
      [{ userPrompt: "hi", sandbox: "nope" }, Code.InvalidArgument],
      [{ userPrompt: "hi", provider: "gemini" }, Code.InvalidArgument],
      [{ userPrompt: "hi", provider: "unknown-cli" }, Code.Unimplemented],
    ];
    for (const [req, code] of cases) {
      const err = await collect(client.run(req)).then(
        () => null,
        (e: unknown) => ConnectError.from(e),
      );
      expect({ req, code: err?.code }).toEqual({ req, code });
      expect(err?.rawMessage.length).toBeGreaterThan(5);
    }
    // A huge value is quoted in part: quoted whole, its message made a grpc-message header
    // HTTP/2 clients refuse, and the call ended `internal` with no word of what was wrong.
    // An emoji straddles the cut: half of one made the header impossible to write.
    const huge = `${"v".repeat(139)}${"\u{1F600}".repeat(50_000)}`;
    const hugeCases: [Parameters<typeof client.run>[0], Code, RegExp][] = [
      [
        { userPrompt: "hi", sandbox: huge },
        Code.InvalidArgument,
        /^Sandbox 'v{139}…' .* Allowed: /,
      ],
      [
        { userPrompt: "hi", provider: huge },
        Code.Unimplemented,
        /^Provider 'v{139}…' .* Supported: /,
      ],
      [
        // Its id is normalised first (the emoji dropped).
        { userPrompt: "hi", packageId: "k".repeat(100_000) },
        Code.NotFound,
        /^Requested package not found: k{140}…$/,
      ],
    ];
    for (const [req, code, message] of hugeCases) {
      const err = ConnectError.from(await collect(client.run(req)).catch((e: unknown) => e));
      expect({ code: err.code, message: err.rawMessage }).toEqual({
        code,
        message: expect.stringMatching(message),
      });
    }
    const getRun = ConnectError.from(await client.getRun({ runId: huge }).catch((e: unknown) => e));
    expect([getRun.code, getRun.rawMessage]).toEqual([
      Code.NotFound,
      expect.stringMatching(/^No run v{139}… is visible/),
    ]);
  });

  it("cancelling the call ends the run and frees its slot", async () => {
    server = await startTestServer();
    const client = createClient(RunService, makeTransport(server.baseUrl));
    const ac = new AbortController();
    const seen: RunEvent[] = [];
    await expect(
      (async () => {
        for await (const ev of client.run(
          { sessionId: "cx", userPrompt: "#scenario=slow" },
          { signal: ac.signal },
        )) {
          seen.push(ev);
          if (ev.event.case === "agent") ac.abort();
        }
      })(),
    ).rejects.toThrow();
    expect(seen[0]?.event.case).toBe("meta");
    const deadline = Date.now() + 5000;
    while (server.app.pipeline.liveRuns > 0 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 20));
    expect(server.app.pipeline.liveRuns).toBe(0);
    expect(server.app.admission.activeTotal).toBe(0);
  });
});
