import { execFile } from "node:child_process";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import {
  create,
  createFileRegistry,
  fromBinary,
  type MessageInitShape,
  toBinary,
} from "@bufbuild/protobuf";
import {
  type DescriptorProto,
  type EnumDescriptorProto,
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  type FieldDescriptorProtoSchema,
  type FileDescriptorProto,
  FileDescriptorProtoSchema,
} from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { connectNodeAdapter, createGrpcTransport } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import {
  ServerReflection,
  ServerReflectionRequestSchema,
  ServerReflectionResponseSchema,
} from "../../gen/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ServerReflectionV1alpha } from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { registerReflection } from "../../src/transport/connect/reflection-service.js";
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

type Ask = MessageInitShape<typeof ServerReflectionRequestSchema>["messageRequest"];

/** Each ask sent on one v1 reflection stream, and the answers, in order. */
async function reflect(baseUrl: string, asks: Ask[]) {
  const client = createClient(ServerReflection, createGrpcTransport({ baseUrl }));
  async function* requests() {
    for (const messageRequest of asks) yield { messageRequest };
  }
  const out = [];
  for await (const res of client.serverReflectionInfo(requests())) out.push(res.messageResponse);
  return out;
}

/** The leading comment source_code_info gives the element at `path`, if any. */
function leadingComment(f: FileDescriptorProto, path: number[]): string | undefined {
  return f.sourceCodeInfo?.location.find((l) => l.path.join(".") === path.join("."))
    ?.leadingComments;
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
      {
        case: "fileContainingExtension",
        value: { containingType: "fermilink.runner.v1.RunRequest", extensionNumber: 100 },
      },
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
      else if (m.case === "allExtensionNumbersResponse")
        answers.push(`${m.case} ${m.value.baseTypeName} [${m.value.extensionNumber.join(",")}]`);
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
      "allExtensionNumbersResponse fermilink.runner.v1.RunRequest []",
      "error 5",
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

  it("serves our files with their comments (source_code_info), as grpcurl describe shows them", async () => {
    server = await startTestServer();
    const [byName, bySymbol] = await reflect(server.baseUrl, [
      { case: "fileByFilename", value: "fermilink/runner/v1/run.proto" },
      { case: "fileContainingSymbol", value: "fermilink.runner.v1.GetConcurrencyResponse" },
    ]);
    const files = [byName, bySymbol].map((res) =>
      (res?.case === "fileDescriptorResponse" ? res.value.fileDescriptorProto : []).map((b) =>
        fromBinary(FileDescriptorProtoSchema, b),
      ),
    );
    const run = files[0]?.[0];
    expect(run?.name).toBe("fermilink/runner/v1/run.proto");
    if (!run) return;
    // Paths as descriptor.proto numbers them: service = 6, method = 2, message_type = 4, field = 2.
    const service = run.service.findIndex((s) => s.name === "RunService");
    const message = run.messageType.findIndex((m) => m.name === "RunRequest");
    expect(leadingComment(run, [6, service])).toMatch(
      /^ RunService starts coding-agent runs and streams every event of a run\.\n/,
    );
    expect(leadingComment(run, [6, service, 2, 0])).toMatch(/^ Run validates the request/);
    expect(leadingComment(run, [4, message])).toBe(
      " RunRequest carries FermiLink's `POST /run` body fields under the same names.\n",
    );
    const promptField = run.messageType[message]?.field.findIndex((f) => f.name === "user_prompt");
    expect(leadingComment(run, [4, message, 2, promptField ?? -1])).toBe(
      " The prompt: 1 to 10,000 Unicode code points (not UTF-16 units).\n",
    );
    // Another of our files has its comments too; an import (a well-known type) is served as it
    // was embedded.
    expect(files[1]?.map((f) => [f.name, (f.sourceCodeInfo?.location.length ?? 0) > 0])).toEqual([
      ["fermilink/runner/v1/ops.proto", true],
      ["google/protobuf/timestamp.proto", false],
    ]);
  });

  it("answers extension questions from the files it serves", async () => {
    // No served file of ours declares an extension: a proto2 pair that does, served by the same
    // reflection service on a server of its own.
    const field = (
      name: string,
      number: number,
      type: FieldDescriptorProto_Type,
    ): MessageInitShape<typeof FieldDescriptorProtoSchema> => ({
      name,
      number,
      label: FieldDescriptorProto_Label.OPTIONAL,
      type,
      extendee: ".ext.Base",
    });
    const registry = createFileRegistry(
      create(FileDescriptorProtoSchema, {
        name: "ext/more.proto",
        package: "ext",
        syntax: "proto2",
        dependency: ["ext/base.proto"],
        extension: [field("more", 120, FieldDescriptorProto_Type.INT32)],
      }),
      (name) =>
        name === "ext/base.proto"
          ? create(FileDescriptorProtoSchema, {
              name,
              package: "ext",
              syntax: "proto2",
              messageType: [
                { name: "Base", extensionRange: [{ start: 100, end: 200 }] },
                {
                  name: "Holder",
                  extension: [field("note", 150, FieldDescriptorProto_Type.STRING)],
                },
              ],
              extension: [field("tag", 100, FieldDescriptorProto_Type.STRING)],
            })
          : undefined,
    );
    const more = registry.getFile("ext/more.proto");
    expect(more).toBeDefined();
    if (!more) return;
    const h2 = http2.createServer(
      connectNodeAdapter({ routes: (router) => registerReflection(router, [more], []) }),
    );
    // The client transport keeps its session open: closing the server waits for it otherwise.
    const sessions = new Set<http2.ServerHttp2Session>();
    h2.on("session", (s) => sessions.add(s));
    await new Promise<void>((resolve) => h2.listen(0, "127.0.0.1", resolve));
    try {
      const { port } = h2.address() as AddressInfo;
      const extension = (containingType: string, extensionNumber: number): Ask => ({
        case: "fileContainingExtension",
        value: { containingType, extensionNumber },
      });
      const answers = await reflect(`http://127.0.0.1:${port}`, [
        { case: "allExtensionNumbersOfType", value: "ext.Base" },
        { case: "allExtensionNumbersOfType", value: "ext.Holder" },
        { case: "allExtensionNumbersOfType", value: "ext.Nope" },
        extension("ext.Base", 120),
        extension("ext.Base", 150),
        extension("ext.Base", 100),
        extension("ext.Base", 121),
        extension("ext.Holder", 150),
        extension("ext.Nope", 100),
      ]);
      expect(
        answers.map((m) => {
          if (m.case === "allExtensionNumbersResponse")
            return `${m.value.baseTypeName} [${m.value.extensionNumber.join(",")}]`;
          if (m.case === "fileDescriptorResponse")
            return `file ${fromBinary(FileDescriptorProtoSchema, m.value.fileDescriptorProto[0] ?? new Uint8Array()).name}`;
          return m.case === "errorResponse" ? `error ${m.value.errorCode}` : `${m.case}`;
        }),
      ).toEqual([
        "ext.Base [100,120,150]",
        "ext.Holder []",
        "error 5",
        "file ext/more.proto",
        "file ext/base.proto",
        "file ext/base.proto",
        "error 5",
        "error 5",
        "error 5",
      ]);
    } finally {
      for (const s of sessions) s.destroy();
      await new Promise((resolve) => h2.close(resolve));
    }
  });

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
