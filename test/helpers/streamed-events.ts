import type { TestServer } from "./start-server.js";

/** Events the runner counts as streamed on `face` (`fermilink_runner_events_streamed_total`), all types. */
export async function streamedEvents(s: TestServer, face: "connect" | "sse"): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${s.app.metricsPort}/metrics`)).text();
  const line = new RegExp(
    `^fermilink_runner_events_streamed_total\\{face="${face}",type="[a-z]+"\\} (\\d+)$`,
    "gm",
  );
  let n = 0;
  for (const m of text.matchAll(line)) n += Number(m[1]);
  return n;
}
