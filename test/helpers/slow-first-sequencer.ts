import path from "node:path";
import { BaseSequencer, type TestSpecification } from "vitest/node";

/**
 * The slowest files, slowest first (seconds in CI on a 2-core box, two files
 * at a time, session 22). They start first, so that with files in parallel
 * the run does not end with one of them alone on a worker. Vitest orders by
 * the durations in its cache, but CI has none (`npm ci` empties node_modules,
 * where it lives) and falls back to file size, which put the slowest file
 * (opencode.e2e, a short one) near the end. A file missing here only loses
 * its head start.
 */
const SLOW_FIRST = [
  "test/e2e/opencode.e2e.test.ts", // 98
  "test/browser/web-app.test.ts", // 66
  "test/integration/cli.test.ts", // 59
  "test/unit/process/supervised-process.test.ts", // 51
  "test/integration/run-lifecycle.test.ts", // 42
  "test/e2e/gemini.e2e.test.ts", // 36
  "test/integration/connect-contract-audit.test.ts", // 35
  "test/integration/main-process.test.ts", // 28
  "test/integration/retention.test.ts", // 28
  "test/integration/run-sse.test.ts", // 25
  "test/e2e/file-change.e2e.test.ts", // 22
  "test/integration/restart-safety.test.ts", // 20
  "test/e2e/claude.e2e.test.ts", // 20
  "test/integration/direct-run-stream.test.ts", // 18
  "test/integration/chaos-lifecycle.test.ts", // 17
  "test/unit/process/spawn-helper.test.ts", // 17
  "test/integration/auth.test.ts", // 17
  "test/e2e/codex.e2e.test.ts", // 16
];

const rank = new Map(SLOW_FIRST.map((file, i) => [file, i]));

export class SlowFirstSequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const root = this.ctx.config.root;
    const rankOf = (spec: TestSpecification) =>
      rank.get(path.relative(root, spec.moduleId)) ?? SLOW_FIRST.length;
    // Stable: the base order (its groups first, then its own) stays among equal ranks.
    return sorted
      .map((spec, i) => ({ spec, i, r: rankOf(spec) }))
      .sort(
        (a, b) =>
          a.spec.project.config.sequence.groupOrder - b.spec.project.config.sequence.groupOrder ||
          a.r - b.r ||
          a.i - b.i,
      )
      .map((x) => x.spec);
  }
}
