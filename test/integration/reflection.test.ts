import { execFile } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { fromBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import {
  ServerReflection,
  type ServerReflectionRequestSchema,
} from "../../gen/grpc/reflection/v1/reflection_pb.js";
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

  it("answers by file name as descriptors name files, the answer first, and only for symbols that exist", async () => {
    server = await startTestServer();
    const client = createClient(ServerReflection, createGrpcTransport({ baseUrl: server.baseUrl }));
    const asks: MessageInitShape<typeof ServerReflectionRequestSchema>["messageRequest"][] = [
      { case: "fileByFilename", value: "fermilink/runner/v1/run.proto" },
      { case: "fileByFilename", value: "google/protobuf/timestamp.proto" },
      { case: "fileByFilename", value: "fermilink/runner/v1/run" },
      { case: "fileContainingSymbol", value: "fermilink.runner.v1.RunService.Run" },
      { case: "fileContainingSymbol", value: "fermilink.runner.v1.RunService.NoSuchMethod" },
      { case: "fileContainingSymbol", value: "fermilink.runner.v1.RunRequest.session_id" },
      { case: "fileContainingSymbol", value: "fermilink.runner.v1.RunRequest.no_such_field" },
      // Enum values are named beside their enum, as protoc scopes them; a oneof is a symbol too.
      { case: "fileContainingSymbol", value: "fermilink.runner.v1.RUN_STATUS_QUEUED" },
      { case: "fileContainingSymbol", value: "fermilink.runner.v1.RunStatus.RUN_STATUS_QUEUED" },
      { case: "fileContainingSymbol", value: "fermilink.runner.v1.RunEvent.event" },
      { case: "fileContainingSymbol", value: "fermilink.runner.v1.GetConcurrencyResponse" },
      { case: "allExtensionNumbersOfType", value: "fermilink.runner.v1.RunRequest" },
      { case: "allExtensionNumbersOfType", value: "no.such.Type" },
    ];
    async function* requests() {
      for (const messageRequest of asks) yield { messageRequest };
    }
    const answers: string[] = [];
    for await (const res of client.serverReflectionInfo(requests())) {
      const m = res.messageResponse;
      if (m.case === "fileDescriptorResponse") {
        const names = m.value.fileDescriptorProto.map(
          (b) => fromBinary(FileDescriptorProtoSchema, b).name,
        );
        // The answer first (grpc-go's order; older grpcurl reads only the first), then its imports.
        answers.push(`file ${names[0]} +${names.length - 1}`);
      } else if (m.case === "errorResponse") answers.push(`error ${m.value.errorCode}`);
      else answers.push(m.case ?? "none");
    }
    expect(answers).toEqual([
      "file fermilink/runner/v1/run.proto +2",
      "file google/protobuf/timestamp.proto +0",
      "error 5",
      "file fermilink/runner/v1/run.proto +2",
      "error 5",
      "file fermilink/runner/v1/run.proto +2",
      "error 5",
      "file fermilink/runner/v1/run.proto +2",
      "error 5",
      "file fermilink/runner/v1/run.proto +2",
      "file fermilink/runner/v1/ops.proto +1",
      "allExtensionNumbersResponse",
      "error 5",
    ]);
  });
});
