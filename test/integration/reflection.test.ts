import { execFile } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "../helpers/start-server.js";

const BUF = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  "../../node_modules/.bin/buf",
);

let server: TestServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

function bufCurl(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(BUF, ["curl", ...args], { timeout: 30_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
    );
  });
}

describe("gRPC server reflection (buf curl as a real reflection client)", () => {
  it.each(["grpc-v1", "grpc-v1alpha"])(
    "lists every service and method over %s",
    async (protocol) => {
      server = await startTestServer();
      const out = await bufCurl([
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        "--reflect-protocol",
        protocol,
        "--list-methods",
        server.baseUrl,
      ]);
      expect(out.trim().split("\n")).toEqual([
        "fermilink.runner.v1.OpsService/GetAdmission",
        "fermilink.runner.v1.OpsService/GetConcurrency",
        "fermilink.runner.v1.PackageService/ListPackages",
        "fermilink.runner.v1.RunService/Attach",
        "fermilink.runner.v1.RunService/Cancel",
        "fermilink.runner.v1.RunService/GetRun",
        "fermilink.runner.v1.RunService/ListRuns",
        "fermilink.runner.v1.RunService/Run",
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
      ]);
    },
  );

  it("calls RunService.Run with only reflected schemas", async () => {
    server = await startTestServer();
    const out = await bufCurl([
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      "-d",
      '{"userPrompt":"reflected call","sessionId":"refl"}',
      `${server.baseUrl}/fermilink.runner.v1.RunService/Run`,
    ]);
    const messages = out
      .trim()
      .split(/\n(?=\{)/)
      .map((m) => JSON.parse(m) as Record<string, unknown>);
    expect(Object.keys(messages[0] ?? {})).toContain("meta");
    expect(messages.at(-1)?.exit).toMatchObject({ reason: "EXIT_REASON_COMPLETED", returnCode: 0 });
  });
});
