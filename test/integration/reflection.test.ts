import { execFile } from "node:child_process";
import http2 from "node:http2";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import {
  type DescriptorProto,
  type EnumDescriptorProto,
  type FileDescriptorProto,
  FileDescriptorProtoSchema,
} from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import {
  ServerReflection,
  ServerReflectionRequestSchema,
  ServerReflectionResponseSchema,
} from "../../gen/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ServerReflectionV1alpha } from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { envelope } from "../helpers/envelope.js";
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

/**
 * Every name protoc's descriptor pool defines in `f`, as `file_containing_symbol` is asked
 * for it (grpc-go finds each through protoregistry), read straight from the served proto.
 */
function declaredSymbols(f: FileDescriptorProto): string[] {
  const out: string[] = [];
  const pkg = f.package ? `${f.package}.` : "";
  const enums = (list: EnumDescriptorProto[], scope: string) => {
    for (const e of list) out.push(scope + e.name, ...e.value.map((v) => scope + v.name));
  };
  const messages = (list: DescriptorProto[], scope: string) => {
    for (const m of list) {
      const name = scope + m.name;
      out.push(
        name,
        ...[...m.field, ...m.oneofDecl, ...m.extension].map((x) => `${name}.${x.name}`),
      );
      enums(m.enumType, `${name}.`);
      messages(m.nestedType, `${name}.`);
    }
  };
  messages(f.messageType, pkg);
  enums(f.enumType, pkg);
  out.push(...f.extension.map((x) => pkg + x.name));
  for (const s of f.service)
    out.push(pkg + s.name, ...s.method.map((m) => `${pkg}${s.name}.${m.name}`));
  return out;
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

  it.each([
    ["v1", ServerReflection],
    ["v1alpha", ServerReflectionV1alpha],
  ] as const)(
    "finds the file of every symbol each served file declares over %s",
    async (_, service) => {
      server = await startTestServer();
      // One service for both: v1alpha's messages have the same fields and numbers as v1's.
      const client = createClient(
        service as typeof ServerReflection,
        createGrpcTransport({ baseUrl: server.baseUrl }),
      );
      async function ask(
        asks: MessageInitShape<typeof ServerReflectionRequestSchema>["messageRequest"][],
      ) {
        async function* requests() {
          for (const messageRequest of asks) yield { messageRequest };
        }
        const out = [];
        for await (const res of client.serverReflectionInfo(requests()))
          out.push(res.messageResponse);
        return out;
      }
      const [listed] = await ask([{ case: "listServices", value: "" }]);
      const services = listed?.case === "listServicesResponse" ? listed.value.service : [];
      const files = new Map<string, FileDescriptorProto>();
      for (const res of await ask(
        services.map((s) => ({ case: "fileContainingSymbol", value: s.name })),
      )) {
        for (const b of res.case === "fileDescriptorResponse"
          ? res.value.fileDescriptorProto
          : []) {
          const f = fromBinary(FileDescriptorProtoSchema, b);
          files.set(f.name, f);
        }
      }
      expect([...files.keys()].sort()).toEqual([
        "fermilink/runner/v1/ops.proto",
        "fermilink/runner/v1/packages.proto",
        "fermilink/runner/v1/run.proto",
        "google/protobuf/duration.proto",
        "google/protobuf/timestamp.proto",
        "grpc/reflection/v1/reflection.proto",
        "grpc/reflection/v1alpha/reflection.proto",
      ]);
      const expected = [...files.values()].flatMap((f) =>
        declaredSymbols(f).map((symbol) => `${symbol} in ${f.name}`),
      );
      // Includes the synthetic oneof protoc gives a proto3 `optional` field.
      expect(expected).toContain(
        "fermilink.runner.v1.GetConcurrencyResponse._queue_capacity in fermilink/runner/v1/ops.proto",
      );
      const answers = await ask(
        expected.map((e) => ({ case: "fileContainingSymbol", value: e.split(" in ")[0] ?? "" })),
      );
      expect(
        answers.map((res, i) => {
          const symbol = expected[i]?.split(" in ")[0];
          if (res.case !== "fileDescriptorResponse") return `${symbol} ${res.case}`;
          const first = res.value.fileDescriptorProto[0];
          return `${symbol} in ${first && fromBinary(FileDescriptorProtoSchema, first).name}`;
        }),
      ).toEqual(expected);
    },
  );

  it("answers every request sent before an undecodable one in the same write, then ends invalid_argument", async () => {
    server = await startTestServer();
    const request = (
      messageRequest: MessageInitShape<typeof ServerReflectionRequestSchema>["messageRequest"],
    ) =>
      envelope(
        0,
        toBinary(
          ServerReflectionRequestSchema,
          create(ServerReflectionRequestSchema, { messageRequest }),
        ),
      );
    const session = http2.connect(server.baseUrl);
    try {
      const stream = session.request({
        ":method": "POST",
        ":path": "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "content-type": "application/grpc",
        te: "trailers",
      });
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      const trailers = new Promise<http2.IncomingHttpHeaders>((resolve) =>
        stream.on("trailers", resolve),
      );
      // One write, so the server reads all four in one chunk, as a client that pipelines does.
      stream.end(
        Buffer.concat([
          request({ case: "listServices", value: "" }),
          request({ case: "fileContainingSymbol", value: "no.such.Symbol" }),
          request(undefined),
          // Field 7 (list_services) says 5 bytes follow; one does.
          envelope(0, Buffer.from([0x3a, 0x05, 0x01])),
          request({ case: "listServices", value: "" }),
        ]),
      );
      expect((await trailers)["grpc-status"]).toBe("3");
      await new Promise((resolve) => stream.on("close", resolve));
      const body = Buffer.concat(chunks);
      const answers: string[] = [];
      for (let at = 0; at < body.length; at += 5 + body.readUInt32BE(at + 1)) {
        const res = fromBinary(
          ServerReflectionResponseSchema,
          body.subarray(at + 5, at + 5 + body.readUInt32BE(at + 1)),
        );
        const m = res.messageResponse;
        answers.push(m.case === "errorResponse" ? `error ${m.value.errorCode}` : `${m.case}`);
      }
      expect(answers).toEqual(["listServicesResponse", "error 5", "error 3"]);
    } finally {
      session.destroy();
    }
  });
});
