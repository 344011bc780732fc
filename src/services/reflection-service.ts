// gRPC server reflection, v1 and v1alpha (same messages, two package names), so that grpcurl,
// `buf curl` and Postman can call us without local .proto files. Answers come from the
// descriptors compiled into src/gen: what we reflect is exactly what we serve.
import { create, createRegistry, toBinary, type DescFile, type Registry } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import * as v1 from "../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../gen/grpc/reflection/v1alpha/reflection_pb.js";

/** The answer to one reflection request, in the shape shared by v1 and v1alpha. */
type Answer =
  | { case: "fileDescriptorResponse"; value: { fileDescriptorProto: Uint8Array[] } }
  | { case: "allExtensionNumbersResponse"; value: { baseTypeName: string; extensionNumber: number[] } }
  | { case: "listServicesResponse"; value: { service: { name: string }[] } }
  | { case: "errorResponse"; value: { errorCode: number; errorMessage: string } };

type Question = v1.ServerReflectionRequest["messageRequest"];

const NOT_FOUND = 5; // google.rpc.Code.NOT_FOUND
const INVALID_ARGUMENT = 3;

export class Reflector {
  private readonly registry: Registry;
  private readonly filesByName = new Map<string, DescFile>();

  constructor(
    files: readonly DescFile[],
    private readonly serviceNames: readonly string[],
  ) {
    const add = (file: DescFile): void => {
      if (this.filesByName.has(file.proto.name)) return;
      this.filesByName.set(file.proto.name, file);
      file.dependencies.forEach(add);
    };
    files.forEach(add);
    this.registry = createRegistry(...this.filesByName.values());
  }

  answer(question: Question): Answer {
    switch (question.case) {
      case "fileByFilename":
        return this.fileAnswer(this.filesByName.get(question.value), `file "${question.value}"`);
      case "fileContainingSymbol":
        return this.fileAnswer(this.fileOfSymbol(question.value), `symbol "${question.value}"`);
      case "fileContainingExtension": {
        const { containingType, extensionNumber } = question.value;
        const ext = [...this.registry].find((d) => d.kind === "extension" && d.extendee.typeName === containingType && d.number === extensionNumber);
        return this.fileAnswer(ext?.file, `extension ${containingType}#${extensionNumber}`);
      }
      case "allExtensionNumbersOfType": {
        const message = this.registry.getMessage(question.value);
        if (message === undefined) return notFound(`type "${question.value}"`);
        const numbers = [...this.registry]
          .filter((d) => d.kind === "extension" && d.extendee.typeName === question.value)
          .map((d) => (d.kind === "extension" ? d.number : 0));
        return { case: "allExtensionNumbersResponse", value: { baseTypeName: question.value, extensionNumber: numbers } };
      }
      case "listServices":
        return { case: "listServicesResponse", value: { service: this.serviceNames.map((name) => ({ name })) } };
      default:
        return { case: "errorResponse", value: { errorCode: INVALID_ARGUMENT, errorMessage: "empty reflection request" } };
    }
  }

  private fileOfSymbol(symbol: string): DescFile | undefined {
    const direct = this.registry.get(symbol);
    if (direct !== undefined) return direct.file;
    // A method (`pkg.Service.Method`) or a field / enum value: look up the parent.
    const parent = this.registry.get(symbol.slice(0, Math.max(0, symbol.lastIndexOf("."))));
    return parent?.file;
  }

  /** The file first, then its transitive dependencies, each once. */
  private fileAnswer(file: DescFile | undefined, what: string): Answer {
    if (file === undefined) return notFound(what);
    const ordered: DescFile[] = [];
    const visit = (f: DescFile): void => {
      if (ordered.includes(f)) return;
      ordered.push(f);
      f.dependencies.forEach(visit);
    };
    visit(file);
    return {
      case: "fileDescriptorResponse",
      value: { fileDescriptorProto: ordered.map((f) => toBinary(FileDescriptorProtoSchema, f.proto)) },
    };
  }
}

function notFound(what: string): Answer {
  return { case: "errorResponse", value: { errorCode: NOT_FOUND, errorMessage: `${what} not found` } };
}

export function reflectionServiceV1(reflector: Reflector): ServiceImpl<typeof v1.ServerReflection> {
  return {
    async *serverReflectionInfo(requests) {
      for await (const request of requests) {
        yield create(v1.ServerReflectionResponseSchema, {
          validHost: request.host,
          originalRequest: request,
          messageResponse: reflector.answer(request.messageRequest),
        });
      }
    },
  };
}

export function reflectionServiceV1alpha(reflector: Reflector): ServiceImpl<typeof v1alpha.ServerReflection> {
  return {
    async *serverReflectionInfo(requests) {
      for await (const request of requests) {
        yield create(v1alpha.ServerReflectionResponseSchema, {
          validHost: request.host,
          originalRequest: request,
          messageResponse: reflector.answer(request.messageRequest as Question),
        });
      }
    },
  };
}
