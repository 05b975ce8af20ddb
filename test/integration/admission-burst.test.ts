import { stat } from "node:fs/promises";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { callerArrivals, noteCallerArrival, runsPreparing } from "../../src/process/spawn-turns.js";
import { parseSse } from "../helpers/sse-client.js";
import {
  FAKE_AGENT,
  type GatedTestServer,
  startGatedTestServer,
  startTestServer,
  type TestServer,
} from "../helpers/start-server.js";

/**
 * The fake agent's `gate` scenario in perl: a burst starts over a hundred providers, and a node
 * start each (a tenth of a second of CPU) made most of the test's time on a 2-core box.
 */
const GATE_AGENT = path.join(path.dirname(FAKE_AGENT), "gate-agent.pl");

let server: TestServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

/**
 * 200 simultaneous SSE runs whose providers block on a gate file until every
 * request has been answered (200 or 429), so the counts are exact whatever
 * the machine's speed.
 */
async function runBurst(s: GatedTestServer, users: number) {
  const perUser = 200 / users;
  const responses = await Promise.all(
    Array.from({ length: 200 }, (_, i) =>
      fetch(`${s.baseUrl}/run`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          user_id: `user${i % users}`,
          session_id: `burst-${users}-${i}`,
          user_prompt: "#scenario=gate",
        }),
      }),
    ),
  );
  expect(perUser * users).toBe(200);
  const rejected = responses.filter((r) => r.status === 429);
  const accepted = responses.filter((r) => r.status === 200);
  const messages = await Promise.all(
    rejected.map(async (r) => ((await r.json()) as { detail: string }).detail),
  );
  const snapshot = { active: s.app.admission.activeTotal, pending: s.app.admission.pendingTotal };
  await s.openGate();
  const reasons = await Promise.all(
    accepted.map(async (r) => {
      let last = "";
      for await (const ev of parseSse(r.body as ReadableStream<Uint8Array>)) last = ev.data;
      const exit = JSON.parse(last) as { reason: string; message?: string };
      // The message too: a failure under load then says which end it met.
      return exit.reason === "completed" ? exit.reason : `${exit.reason}: ${exit.message}`;
    }),
  );
  return { accepted: accepted.length, rejected: rejected.length, messages, snapshot, reasons };
}

describe("admission under a burst of 200 simultaneous runs", () => {
  it.each([
    // 20 users: 20 run, the queue fills to 50, the other 130 are refused.
    [20, { accepted: 70, active: 20, pending: 50 }],
    // 5 users: each gets 2 running + 5 waiting; the rest hit the per-user cap.
    [5, { accepted: 35, active: 10, pending: 25 }],
  ])(
    "from %i users admits, queues and refuses exactly as configured",
    async (users, want) => {
      const s = await startGatedTestServer({
        FERMILINK_CODEX_BIN: GATE_AGENT,
        FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS: "20",
        FERMILINK_RUNNER_PER_USER_CONCURRENT_RUNS: "2",
        FERMILINK_RUNNER_MAX_QUEUE_SIZE: "50",
        FERMILINK_RUNNER_MAX_PENDING_PER_USER: "5",
      });
      server = s;
      const r = await runBurst(s, users);
      expect({
        accepted: r.accepted,
        active: r.snapshot.active,
        pending: r.snapshot.pending,
      }).toEqual(want);
      expect(r.rejected).toBe(200 - want.accepted);
      for (const m of r.messages)
        expect(m).toMatch(/^Runner queue is full( for this user)? \(\d+ pending requests\)\.$/);
      if (users === 5)
        for (const m of r.messages)
          expect(m).toBe("Runner queue is full for this user (5 pending requests).");
      expect(r.reasons.filter((x) => x !== "completed")).toEqual([]);
      expect(s.app.admission.activeTotal).toBe(0);
      expect(s.app.admission.pendingTotal).toBe(0);
      const metrics = await (await fetch(`http://127.0.0.1:${s.app.metricsPort}/metrics`)).text();
      const rejections = [
        ...metrics.matchAll(/^fermilink_runner_admission_rejections_total\{scope="\w+"\} (\d+)$/gm),
      ]
        .map((m) => Number(m[1]))
        .reduce((a, b) => a + b, 0);
      expect(rejections).toBe(200 - want.accepted);
    },
    120_000,
  );
});

describe("callers still arriving", () => {
  it("are each noted by the pipeline, refused ones too (provider starts give way to them)", async () => {
    server = await startTestServer();
    const s = server;
    const before = callerArrivals();
    const statuses = await Promise.all(
      ["../no", "ok-1"].map(async (session_id) => {
        const r = await fetch(`${s.baseUrl}/run`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ session_id, user_prompt: "#scenario=bench-one-line" }),
        });
        await r.text();
        return r.status;
      }),
    );
    expect(statuses).toEqual([422, 200]);
    expect(callerArrivals() - before).toBe(2);
  });

  it("hold an admitted run's provider start back (for at most a second)", async () => {
    const s = await startGatedTestServer();
    server = s;
    const post = (prompt: string) =>
      fetch(`${s.baseUrl}/run`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ session_id: "held", user_prompt: prompt }),
      });
    const events = async (res: Response) => {
      const out: { event: string; at: number }[] = [];
      for await (const e of parseSse(res.body as ReadableStream<Uint8Array>))
        out.push({ event: e.event, at: Date.now() });
      return out;
    };
    try {
      // The first run holds the session, so the second is noted and then waits for the session.
      const first = await post("#scenario=gate");
      const firstDone = events(first);
      // Its head comes with its first event, once it has the session: not awaited here.
      const secondDone = post("#scenario=bench-one-line").then(events);
      const noted = callerArrivals();
      while (callerArrivals() === noted) await new Promise((r) => setTimeout(r, 5));
      // A caller after the second one, dated so that it stays "just arrived": no timing race.
      noteCallerArrival(Date.now() + 5000);
      await s.openGate();
      await firstDone;
      const seen = await secondDone;
      const metaAt = seen.find((e) => e.event === "meta")?.at ?? 0;
      expect(seen.at(-1)?.event).toBe("runner.exit");
      const invocation = path.join(s.workspacesRoot, "held", "repo", ".fake-agent");
      const startedAt = (await stat(path.join(invocation, "invocation.json"))).mtimeMs;
      // Alone, the provider is up ≈ 0.1 s after `meta`; here its start waited out the 1 s bound.
      expect(startedAt - metaAt).toBeGreaterThan(700);
    } finally {
      noteCallerArrival(0); // the flood is over: later spawns in this file do not wait
    }
  });
});

describe("runs still preparing", () => {
  it("do not include a run waiting for its session: it holds no other run's provider back", async () => {
    const s = await startGatedTestServer();
    server = s;
    const post = (session_id: string, user_prompt: string) =>
      fetch(`${s.baseUrl}/run`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ session_id, user_prompt }),
      });
    const frames = async (res: Response) => {
      const out: string[] = [];
      for await (const e of parseSse(res.body as ReadableStream<Uint8Array>)) out.push(e.event);
      return out;
    };
    // The first run holds its session with a provider that waits for the gate.
    const first = await post("busy", "#scenario=gate");
    const firstIt = parseSse(first.body as ReadableStream<Uint8Array>)[Symbol.asyncIterator]();
    while ((await firstIt.next()).value?.event !== "agent");
    // A second run on that session is admitted, then waits for the session.
    const secondDone = post("busy", "#scenario=bench-one-line").then(frames);
    for (let i = 0; i < 200 && s.app.admission.activeTotal < 2; i++)
      await new Promise((r) => setTimeout(r, 10));
    expect(s.app.admission.activeTotal).toBe(2);
    await new Promise((r) => setTimeout(r, 100));
    // Counted, it would hold every other run's provider start back by up to a second each.
    expect(runsPreparing()).toBe(0);
    const other = await frames(await post("elsewhere", "#scenario=bench-one-line"));
    expect(other.at(-1)).toBe("runner.exit");
    expect(runsPreparing()).toBe(0);
    await s.openGate();
    while (!(await firstIt.next()).done);
    expect((await secondDone).at(-1)).toBe("runner.exit");
  });
});
