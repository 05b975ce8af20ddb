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
        const actual = stdoutLines(path.join(dir, "stdout.jsonl")).map((line) =>
          adapter.normalize(line),
        );
        const expectedFile = path.join(dir, "expected-items.json");
        if (UPDATE) writeFileSync(expectedFile, `${JSON.stringify(actual, null, 2)}\n`);
        const expected: unknown = JSON.parse(readFileSync(expectedFile, "utf8"));
        expect(actual).toEqual(expected);
      });
    }
  }
});
