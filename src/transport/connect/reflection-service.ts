import { create, createRegistry, type DescFile, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { ConnectRouter } from "@connectrpc/connect";
import * as v1 from "../../../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../../gen/grpc/reflection/v1alpha/reflection_pb.js";

/** A file and every file it imports, each once, dependencies first. */
function withDependencies(roots: DescFile[]): Map<string, DescFile> {
  const out = new Map<string, DescFile>();
  const visit = (f: DescFile) => {
    if (out.has(f.name)) return;
    for (const d of f.dependencies) visit(d);
    out.set(f.name, f);
  };
  for (const r of roots) visit(r);
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
  // Descriptors never change while the server runs: encode each file once.
  const encoded = new Map(
    [...all.values()].map((f) => [f.name, toBinary(FileDescriptorProtoSchema, f.proto)]),
  );
  const fileAnswer = (f: DescFile): Answer => ({
    case: "fileDescriptorResponse",
    value: {
      fileDescriptorProto: [...withDependencies([f]).keys()].flatMap(
        (name) => encoded.get(name) ?? [],
      ),
    },
  });
  const notFound = (what: string): Answer => ({
    case: "errorResponse",
    value: { errorCode: NOT_FOUND, errorMessage: `${what} not found` },
  });
  const answer = (req: { messageRequest: { case?: string; value?: unknown } }): Answer => {
    const r = req.messageRequest;
    switch (r.case) {
      case "listServices":
        return {
          case: "listServicesResponse",
          value: { service: serviceNames.map((name) => ({ name })) },
        };
      case "fileByFilename": {
        const f = all.get(String(r.value));
        return f ? fileAnswer(f) : notFound(`file ${String(r.value)}`);
      }
      case "fileContainingSymbol": {
        const symbol = String(r.value);
        // A method symbol (pkg.Service.Method) lives in its service's file.
        const desc = registry.get(symbol) ?? registry.get(symbol.slice(0, symbol.lastIndexOf(".")));
        return desc ? fileAnswer(desc.file) : notFound(`symbol ${symbol}`);
      }
      case "allExtensionNumbersOfType":
        return {
          case: "allExtensionNumbersResponse",
          value: { baseTypeName: String(r.value), extensionNumber: [] },
        };
      default:
        return notFound("extension");
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
