// Exit codes are part of the CLI's interface: `fabric --help` prints them and cli/README.md lists them.
import { Code } from "@connectrpc/connect";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { EXIT, EXIT_CODE_HELP, exitCodeOf } from "../src/exit-codes.js";

describe("exit codes", () => {
  it("are listed in cli/README.md exactly as `fabric --help` prints them", () => {
    const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
    for (const [code, text] of EXIT_CODE_HELP) {
      const escaped = text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
      expect(readme).toMatch(new RegExp(`^\\| ${code} +\\| ${escaped} +\\|$`, "m"));
    }
  });

  it("follow the gRPC code of a failed call", () => {
    expect(exitCodeOf(Code.InvalidArgument)).toBe(EXIT.usage);
    expect(exitCodeOf(Code.Unauthenticated)).toBe(EXIT.refused);
    expect(exitCodeOf(Code.PermissionDenied)).toBe(EXIT.refused);
    expect(exitCodeOf(Code.NotFound)).toBe(EXIT.notFound);
    expect(exitCodeOf(Code.Unavailable)).toBe(EXIT.unavailable);
    expect(exitCodeOf(Code.DeadlineExceeded)).toBe(EXIT.unavailable);
    expect(exitCodeOf(Code.FailedPrecondition)).toBe(EXIT.precondition);
    expect(exitCodeOf(Code.AlreadyExists)).toBe(EXIT.precondition);
    expect(exitCodeOf(Code.ResourceExhausted)).toBe(EXIT.exhausted);
    expect(exitCodeOf(Code.Internal)).toBe(EXIT.failure);
  });
});
