import { defineConfig } from "vitest/config";

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
  },
});
