/**
 * Golden transcripts (style.md "absorb" item 13): every folder
 * `test/fixtures/transcripts/<provider>/<case>/` holds `stdout.jsonl` and
 * `expected-items.json`, one array of items per stdout line. A new case is a
 * new folder; nothing here needs editing.
 *
 * To rewrite the expectations after a deliberate change (then review the diff):
 * `UPDATE_GOLDEN=1 npx vitest run test/unit/providers/normalize-golden.test.ts`.
 */
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { PROVIDER_IDS } from "../../../src/config/providers.js";
import { getProviderAdapter } from "../../../src/providers/registry.js";
import { readLines } from "../../helpers/read-lines.js";

const ROOT = fileURLToPath(new URL("../../fixtures/transcripts/", import.meta.url));
const UPDATE = process.env.UPDATE_GOLDEN === "1";

function caseDirs(provider: string): string[] {
  const dir = path.join(ROOT, provider);
  return readdirSync(dir, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort();
}

function stdoutLines(file: string): string[] {
  const text = readFileSync(file, "utf8");
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  return lines;
}

describe("golden transcripts", () => {
  for (const provider of PROVIDER_IDS) {
    const adapter = getProviderAdapter(provider);

    it(`${provider} has at least two cases`, () => {
      expect(caseDirs(provider).length).toBeGreaterThanOrEqual(2);
    });

    for (const name of caseDirs(provider)) {
      it(`${provider}/${name}`, () => {
        const dir = path.join(ROOT, provider, name);
        // In order, each line with the ones before it: a result finds its call (journal's look-back).
        const actual = readLines(adapter.normalize, stdoutLines(path.join(dir, "stdout.jsonl")));
        const expectedFile = path.join(dir, "expected-items.json");
        if (UPDATE) writeFileSync(expectedFile, `${JSON.stringify(actual, null, 2)}\n`);
        const expected: unknown = JSON.parse(readFileSync(expectedFile, "utf8"));
        expect(actual).toEqual(expected);
      });
    }

    it(`${provider}: every line read as a result names one of its result event types`, () => {
      let results = 0;
      for (const name of caseDirs(provider)) {
        for (const line of stdoutLines(path.join(ROOT, provider, name, "stdout.jsonl"))) {
          if (!adapter.normalize(line).some((i) => i.kind === "result")) continue;
          results++;
          expect({ line, named: adapter.resultEventTypes.some((t) => line.includes(t)) }).toEqual({
            line,
            named: true,
          });
        }
      }
      expect(results).toBeGreaterThan(0);
    });
  }
});
