import { defineConfig } from "vitest/config";

// One runner for every package. Test files that start real processes share the 2-core machine, so the
// pool is kept small and timeouts allow for process start-up, never for measuring speed.
export default defineConfig({
  test: {
    include: ["**/test/**/*.test.ts", "**/src/**/*.test.ts"],
    exclude: ["**/node_modules/**"],
    pool: "forks",
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 60_000,
    setupFiles: ["platform/src/testing/setup.ts"],
  },
});
