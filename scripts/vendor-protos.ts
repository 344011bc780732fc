// Writes proto-vendor/, the third-party .proto files our API imports or serves:
// - grpc/health/v1/health.proto and grpc/reflection/{v1,v1alpha}/reflection.proto, copied from
//   the npm packages that ship them (grpc-health-check, @grpc/reflection), because we serve
//   those services ourselves;
// - google/rpc/{status,error_details,code}.proto and google/api/{field_behavior,resource}.proto,
//   copied from google-proto-files: our errors carry google.rpc details that every gRPC
//   ecosystem understands, and our fields carry google.api annotations;
// - buf/validate/validate.proto, printed back out from the descriptor that
//   @bufbuild/protovalidate embeds. No npm package ships the .proto source and the BSR is not
// reachable from our machines, so this is the only way to give `buf` the file our protos
// import. The generated TypeScript never uses the vendored file: buf.gen.yaml rewrites the
// import to the package, so the runtime descriptor and the vendored source come from the same
// package version.
//
// Usage: tsx scripts/vendor-protos.ts [--check]
//   --check  exit 1 (and write nothing) when a committed file differs from its package.
//
// The printer is handwritten because no library prints a FileDescriptorProto as .proto source. It covers the
// subset of descriptor features validate.proto uses (proto2, nested oneofs, extension ranges,
// reserved ranges, extensions, file options and the `predefined` field option) and refuses
// anything else rather than printing a wrong file.
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { getExtension, hasExtension, isFieldSet } from "@bufbuild/protobuf";
import {
  FieldDescriptorProtoSchema,
  FieldOptionsSchema,
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  type DescriptorProto,
  type EnumDescriptorProto,
  type FieldDescriptorProto,
  type FieldOptions,
} from "@bufbuild/protobuf/wkt";
import { file_buf_validate_validate, predefined } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const vendorDir = join(root, "proto-vendor");
const pkgVersion = JSON.parse(readFileSync(join(root, "node_modules/@bufbuild/protovalidate/package.json"), "utf8")).version as string;

const scalarNames: Partial<Record<FieldDescriptorProto_Type, string>> = {
  [FieldDescriptorProto_Type.DOUBLE]: "double",
  [FieldDescriptorProto_Type.FLOAT]: "float",
  [FieldDescriptorProto_Type.INT64]: "int64",
  [FieldDescriptorProto_Type.UINT64]: "uint64",
  [FieldDescriptorProto_Type.INT32]: "int32",
  [FieldDescriptorProto_Type.FIXED64]: "fixed64",
  [FieldDescriptorProto_Type.FIXED32]: "fixed32",
  [FieldDescriptorProto_Type.BOOL]: "bool",
  [FieldDescriptorProto_Type.STRING]: "string",
  [FieldDescriptorProto_Type.BYTES]: "bytes",
  [FieldDescriptorProto_Type.UINT32]: "uint32",
  [FieldDescriptorProto_Type.SFIXED32]: "sfixed32",
  [FieldDescriptorProto_Type.SFIXED64]: "sfixed64",
  [FieldDescriptorProto_Type.SINT32]: "sint32",
  [FieldDescriptorProto_Type.SINT64]: "sint64",
};

const MAX_FIELD_NUMBER = 536870911;

// proto2 descriptor fields read as their default when unset, so membership in a oneof must be
// asked with isFieldSet rather than by comparing oneofIndex with undefined.
function oneofIndexOf(field: FieldDescriptorProto): number | undefined {
  return isFieldSet(field, FieldDescriptorProtoSchema.field.oneofIndex) ? field.oneofIndex : undefined;
}

function typeName(field: FieldDescriptorProto): string {
  const scalar = scalarNames[field.type];
  if (scalar !== undefined) return scalar;
  if (field.type === FieldDescriptorProto_Type.MESSAGE || field.type === FieldDescriptorProto_Type.ENUM) {
    return field.typeName; // fully qualified with a leading dot: always unambiguous
  }
  throw new Error(`unsupported field type ${field.type} on ${field.name}`);
}

function quote(text: string): string {
  return JSON.stringify(text);
}

function fieldOptions(options: FieldOptions | undefined): string[] {
  if (options === undefined) return [];
  const out: string[] = [];
  if (options.deprecated) out.push("deprecated = true");
  if (isFieldSet(options, FieldOptionsSchema.field.packed)) out.push(`packed = ${options.packed}`);
  if (hasExtension(options, predefined)) {
    for (const rule of getExtension(options, predefined).cel) {
      const parts = [`id: ${quote(rule.id)}`];
      if (rule.message !== "") parts.push(`message: ${quote(rule.message)}`);
      parts.push(`expression: ${quote(rule.expression)}`);
      out.push(`(buf.validate.predefined).cel = {${parts.join(", ")}}`);
    }
  }
  return out;
}

function printField(field: FieldDescriptorProto, indent: string, inOneof: boolean): string {
  if (isFieldSet(field, FieldDescriptorProtoSchema.field.defaultValue)) {
    throw new Error(`unsupported default value on ${field.name}`);
  }
  let label = "";
  if (!inOneof) {
    label = field.label === FieldDescriptorProto_Label.REPEATED ? "repeated " : field.label === FieldDescriptorProto_Label.REQUIRED ? "required " : "optional ";
  }
  const options = fieldOptions(field.options);
  const suffix = options.length > 0 ? ` [\n${options.map((o) => `${indent}  ${o}`).join(",\n")}\n${indent}]` : "";
  return `${indent}${label}${typeName(field)} ${field.name} = ${field.number}${suffix};`;
}

function printEnum(e: EnumDescriptorProto, indent: string): string[] {
  const lines = [`${indent}enum ${e.name} {`];
  for (const v of e.value) lines.push(`${indent}  ${v.name} = ${v.number};`);
  lines.push(`${indent}}`);
  return lines;
}

function range(start: number, endExclusive: number): string {
  const end = endExclusive - 1;
  if (end === start) return `${start}`;
  return `${start} to ${end >= MAX_FIELD_NUMBER ? "max" : end}`;
}

function printMessage(m: DescriptorProto, indent: string): string[] {
  if (m.options !== undefined && (m.options.mapEntry || m.options.deprecated)) {
    throw new Error(`unsupported message options on ${m.name}`);
  }
  const inner = `${indent}  `;
  const lines = [`${indent}message ${m.name} {`];
  for (const nested of m.nestedType) lines.push(...printMessage(nested, inner));
  for (const e of m.enumType) lines.push(...printEnum(e, inner));
  m.field.forEach((field) => {
    if (oneofIndexOf(field) !== undefined) return;
    lines.push(printField(field, inner, false));
  });
  m.oneofDecl.forEach((oneof, index) => {
    lines.push(`${inner}oneof ${oneof.name} {`);
    for (const field of m.field.filter((f) => oneofIndexOf(f) === index)) {
      lines.push(printField(field, `${inner}  `, true));
    }
    lines.push(`${inner}}`);
  });
  if (m.extensionRange.length > 0) {
    lines.push(`${inner}extensions ${m.extensionRange.map((r) => range(r.start, r.end)).join(", ")};`);
  }
  if (m.reservedRange.length > 0) {
    lines.push(`${inner}reserved ${m.reservedRange.map((r) => range(r.start, r.end)).join(", ")};`);
  }
  if (m.reservedName.length > 0) {
    lines.push(`${inner}reserved ${m.reservedName.map(quote).join(", ")};`);
  }
  if (m.extension.length > 0) throw new Error(`unsupported nested extension in ${m.name}`);
  lines.push(`${indent}}`);
  return lines;
}

function render(): string {
  const file = file_buf_validate_validate.proto;
  if (file.syntax !== "" && file.syntax !== "proto2") {
    throw new Error(`unsupported syntax ${file.syntax}`);
  }
  const o = file.options;
  const lines = [
    `// GENERATED by scripts/vendor-validate-proto.ts from @bufbuild/protovalidate ${pkgVersion}.`,
    "// Do not edit. Source: https://github.com/bufbuild/protovalidate (Apache-2.0,",
    "// Copyright 2023-2026 Buf Technologies, Inc.). Comments are not part of the embedded",
    "// descriptor; see the upstream file for documentation of each rule.",
    'syntax = "proto2";',
    "",
    `package ${file.package};`,
    "",
    ...file.dependency.map((d) => `import ${quote(d)};`),
    "",
  ];
  if (o?.goPackage) lines.push(`option go_package = ${quote(o.goPackage)};`);
  if (o?.javaMultipleFiles) lines.push("option java_multiple_files = true;");
  if (o?.javaOuterClassname) lines.push(`option java_outer_classname = ${quote(o.javaOuterClassname)};`);
  if (o?.javaPackage) lines.push(`option java_package = ${quote(o.javaPackage)};`);
  lines.push("");
  for (const ext of file.extension) {
    lines.push(`extend ${ext.extendee} {`, printField(ext, "  ", false), "}", "");
  }
  for (const m of file.messageType) lines.push(...printMessage(m, ""), "");
  for (const e of file.enumType) lines.push(...printEnum(e, ""), "");
  return lines.join("\n").replace(/\n+$/, "\n");
}

// The printer lays lines out simply; `buf format` gives the file the layout `buf format
// --diff` in CI expects.
function formatWithBuf(source: string): string {
  const dir = mkdtempSync(join(tmpdir(), "vendor-validate-"));
  try {
    const file = join(dir, "validate.proto");
    writeFileSync(file, source);
    execFileSync(join(root, "node_modules/.bin/buf"), ["format", "-w", file], { stdio: "inherit" });
    return readFileSync(file, "utf8");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const copied: Record<string, string> = {
  "grpc/health/v1/health.proto": "node_modules/grpc-health-check/proto/health/v1/health.proto",
  "grpc/reflection/v1/reflection.proto": "node_modules/@grpc/reflection/build/proto/grpc/reflection/v1/reflection.proto",
  "grpc/reflection/v1alpha/reflection.proto": "node_modules/@grpc/reflection/build/proto/grpc/reflection/v1alpha/reflection.proto",
  ...Object.fromEntries(
    ["rpc/status", "rpc/error_details", "rpc/code", "api/field_behavior", "api/resource"].map((name) => [
      `google/${name}.proto`,
      `node_modules/google-proto-files/google/${name}.proto`,
    ]),
  ),
};

const wanted = new Map<string, string>([["buf/validate/validate.proto", formatWithBuf(render())]]);
for (const [path, source] of Object.entries(copied)) {
  wanted.set(path, formatWithBuf(readFileSync(join(root, source), "utf8")));
}

const stale: string[] = [];
for (const [path, text] of wanted) {
  const target = join(vendorDir, path);
  let current = "";
  try {
    current = readFileSync(target, "utf8");
  } catch {
    // a missing file counts as stale
  }
  if (current === text) continue;
  stale.push(path);
  if (!process.argv.includes("--check")) {
    mkdirSync(dirname(target), { recursive: true });
    writeFileSync(target, text);
    console.log(`wrote proto-vendor/${path}`);
  }
}
if (process.argv.includes("--check") && stale.length > 0) {
  console.error(`proto-vendor is out of date (${stale.join(", ")}); run: npx tsx scripts/vendor-protos.ts`);
  process.exit(1);
}
