import { create, createRegistry, type DescFile, type Registry, toBinary } from "@bufbuild/protobuf";
import {
  type DescriptorProto,
  type EnumDescriptorProto,
  FileDescriptorProtoSchema,
} from "@bufbuild/protobuf/wkt";
import type { ConnectRouter } from "@connectrpc/connect";
import * as v1 from "../../../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { sourceDescriptors } from "../../../gen/source_descriptors_pb.js";

/**
 * A file and every file it imports, each once, dependencies first, by file
 * name as the descriptors name them (`fermilink/runner/v1/run.proto`): what
 * clients ask `file_by_filename` for, after reading a file's dependencies.
 */
function withDependencies(roots: DescFile[]): Map<string, DescFile> {
  const out = new Map<string, DescFile>();
  const visit = (f: DescFile) => {
    if (out.has(f.proto.name)) return;
    for (const d of f.dependencies) visit(d);
    out.set(f.proto.name, f);
  };
  for (const r of roots) visit(r);
  return out;
}

/**
 * Every fully-qualified name the files declare, with its file, scoped as
 * protoc scopes them (what `file_containing_symbol` is asked for): types,
 * fields, oneofs, methods, extensions, and enum values, which are siblings of
 * their enum (`fermilink.runner.v1.RUN_STATUS_QUEUED`, not
 * `...RunStatus.RUN_STATUS_QUEUED`). Read from the descriptor protos, not the
 * Desc objects: those leave out names protoc still defines, the synthetic
 * oneof of a proto3 `optional` field (`RunInfo._return_code`) and map entries.
 */
function symbolFiles(files: Iterable<DescFile>): Map<string, DescFile> {
  const out = new Map<string, DescFile>();
  for (const file of files) {
    const pkg = file.proto.package ? `${file.proto.package}.` : "";
    const enums = (list: EnumDescriptorProto[], scope: string) => {
      for (const e of list) {
        out.set(scope + e.name, file);
        for (const v of e.value) out.set(scope + v.name, file);
      }
    };
    const messages = (list: DescriptorProto[], scope: string) => {
      for (const m of list) {
        const name = scope + m.name;
        out.set(name, file);
        for (const f of [...m.field, ...m.oneofDecl, ...m.extension]) {
          out.set(`${name}.${f.name}`, file);
        }
        enums(m.enumType, `${name}.`);
        messages(m.nestedType, `${name}.`);
      }
    };
    messages(file.proto.messageType, pkg);
    enums(file.proto.enumType, pkg);
    for (const x of file.proto.extension) out.set(pkg + x.name, file);
    for (const s of file.proto.service) {
      out.set(pkg + s.name, file);
      for (const m of s.method) out.set(`${pkg}${s.name}.${m.name}`, file);
    }
  }
  return out;
}

/**
 * The extensions the files declare, by the full name of the message they extend, then by field
 * number, with the file that declares each: what `all_extension_numbers_of_type` and
 * `file_containing_extension` are asked for.
 */
function extensionFiles(registry: Registry): Map<string, Map<number, DescFile>> {
  const out = new Map<string, Map<number, DescFile>>();
  for (const desc of registry) {
    if (desc.kind !== "extension") continue;
    const numbers = out.get(desc.extendee.typeName) ?? new Map<number, DescFile>();
    numbers.set(desc.number, desc.file);
    out.set(desc.extendee.typeName, numbers);
  }
  return out;
}

/** What a reflection answer needs, whichever version asked. */
type Answer =
  | { case: "fileDescriptorResponse"; value: { fileDescriptorProto: Uint8Array[] } }
  | { case: "listServicesResponse"; value: { service: { name: string }[] } }
  | {
      case: "allExtensionNumbersResponse";
      value: { baseTypeName: string; extensionNumber: number[] };
    }
  | { case: "errorResponse"; value: { errorCode: number; errorMessage: string } };

const INVALID_ARGUMENT = 3;
const NOT_FOUND = 5;

/**
 * gRPC server reflection (v1 and v1alpha) over this server's own descriptors,
 * so `grpcurl` and `buf curl --reflect` work without proto files.
 */
export function registerReflection(
  router: ConnectRouter,
  files: DescFile[],
  serviceNames: string[],
): void {
  const all = withDependencies(files);
  const registry = createRegistry(...all.values());
  const symbols = symbolFiles(all.values());
  const extensions = extensionFiles(registry);
  // Descriptors never change while the server runs: encode each file once. Our own files go out
  // as the compiler wrote them, comments included, so `grpcurl describe` shows their
  // documentation; the embedded descriptors (well-known types, a file given here that is not
  // in proto/) have none.
  const encoded = new Map(
    [...all.values()].map((f) => {
      const withComments = sourceDescriptors[f.proto.name];
      return [
        f.proto.name,
        withComments === undefined
          ? toBinary(FileDescriptorProtoSchema, f.proto)
          : new Uint8Array(Buffer.from(withComments, "base64")),
      ];
    }),
  );
  // The answer first, then what it imports, as grpc-go sends them: clients that take the first
  // file as the answer (grpcurl built with jhump/protoreflect before v1.10.3) found an import.
  const fileAnswer = (f: DescFile): Answer => ({
    case: "fileDescriptorResponse",
    value: {
      fileDescriptorProto: [...withDependencies([f]).keys()]
        .reverse()
        .flatMap((name) => encoded.get(name) ?? []),
    },
  });
  const notFound = (what: string): Answer => ({
    case: "errorResponse",
    value: { errorCode: NOT_FOUND, errorMessage: `${what} not found` },
  });
  const answer = (req: v1.ServerReflectionRequest | v1alpha.ServerReflectionRequest): Answer => {
    const r = req.messageRequest;
    switch (r.case) {
      case "listServices":
        return {
          case: "listServicesResponse",
          value: { service: serviceNames.map((name) => ({ name })) },
        };
      case "fileByFilename": {
        const f = all.get(r.value);
        return f ? fileAnswer(f) : notFound(`file ${r.value}`);
      }
      case "fileContainingSymbol": {
        const f = symbols.get(r.value);
        return f ? fileAnswer(f) : notFound(`symbol ${r.value}`);
      }
      case "allExtensionNumbersOfType": {
        const type = registry.getMessage(r.value);
        if (!type) return notFound(`type ${r.value}`);
        const numbers = [...(extensions.get(type.typeName)?.keys() ?? [])];
        return {
          case: "allExtensionNumbersResponse",
          value: { baseTypeName: type.typeName, extensionNumber: numbers.sort((a, b) => a - b) },
        };
      }
      case "fileContainingExtension": {
        const { containingType, extensionNumber } = r.value;
        const f = extensions.get(containingType)?.get(extensionNumber);
        return f ? fileAnswer(f) : notFound(`extension ${extensionNumber} of ${containingType}`);
      }
      default:
        return {
          case: "errorResponse",
          value: { errorCode: INVALID_ARGUMENT, errorMessage: "the request asks for nothing" },
        };
    }
  };
  router.service(v1.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const req of requests) {
        yield create(v1.ServerReflectionResponseSchema, {
          validHost: req.host,
          originalRequest: req,
          messageResponse: answer(req),
        });
      }
    },
  });
  router.service(v1alpha.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const req of requests) {
        yield create(v1alpha.ServerReflectionResponseSchema, {
          validHost: req.host,
          originalRequest: req,
          messageResponse: answer(req),
        });
      }
    },
  });
}
