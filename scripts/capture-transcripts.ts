/**
 * Recapture the golden transcripts from the real CLIs: each provider runs
 * through the runner against the project's fake model (a tool run and a 401),
 * and the raw stdout lines it printed become
 * test/fixtures/transcripts/<provider>/real-<case>/stdout.jsonl. Then review
 * and accept the items with
 * `UPDATE_GOLDEN=1 npx vitest run test/unit/providers/normalize-golden.test.ts`.
 *
 * Usage: node --import tsx scripts/capture-transcripts.ts [provider...]
 */
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { PROVIDER_IDS, type ProviderId } from "../src/config/providers.js";
import { runRealCli } from "../test/e2e/real-cli-harness.js";
import type { FakeModelScript } from "../test/fixtures/fake-model/fake-model.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const CASES: Record<string, FakeModelScript> = {
  "real-tool-run": { mode: "tool", command: "echo hello > made-by-agent.txt", answer: "done" },
  "real-http401": { mode: "http401" },
};
// Gemini runs shell commands headless only under the bypass policy.
const ENV: Partial<Record<ProviderId, Record<string, string>>> = {
  gemini: { FERMILINK_AGENT_SANDBOX_POLICY: "bypass" },
};

const wanted = process.argv
  .slice(2)
  .filter((a): a is ProviderId => (PROVIDER_IDS as readonly string[]).includes(a));
for (const provider of wanted.length > 0 ? wanted : PROVIDER_IDS) {
  for (const [name, script] of Object.entries(CASES)) {
    const run = await runRealCli(provider, script, { env: ENV[provider] ?? {} });
    const lines = run.events.flatMap((e) => (e.event.case === "agent" ? [e.event.value.raw] : []));
    const dir = path.join(ROOT, "test/fixtures/transcripts", provider, name);
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, "stdout.jsonl"), `${lines.join("\n")}\n`);
    process.stdout.write(`${provider}/${name}: ${lines.length} lines\n`);
  }
}
