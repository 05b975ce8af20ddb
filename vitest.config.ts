import { availableParallelism } from "node:os";
import { defineConfig } from "vitest/config";
import { SlowFirstSequencer } from "./test/helpers/slow-first-sequencer.js";

// Child-process-heavy suites run in forked workers so a stuck child or a
// signal handler in one file cannot leak into another.
export default defineConfig({
  test: {
    pool: "forks",
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/helpers/build-dist.ts"],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    reporters: ["default"],
    // Two files at a time even on 2 cores (vitest's default there is 1): much of the suite
    // waits on timers, child processes and real CLIs, and the other file uses that time. Not
    // more there: with 3 the box was saturated, the suite no faster, and tests that bound a
    // CLI's start-up (chaos-lifecycle's 3 s idle limit, opencode's stalled stream) failed.
    maxWorkers: Math.max(2, availableParallelism() - 1),
    sequence: { sequencer: SlowFirstSequencer },
  },
});
