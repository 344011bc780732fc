import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/global-setup.ts"],
    // A limit for a test that hangs, not a measure of speed: tests that start several `amctl`
    // processes (a few seconds each on a loaded two-core CI machine) once took over 30 s.
    testTimeout: 90_000,
    hookTimeout: 60_000,
    // Two cores: run files in parallel, but not so many that timing-sensitive socket tests starve.
    maxWorkers: 2,
  },
});
