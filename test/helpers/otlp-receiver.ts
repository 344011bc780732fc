// A small OTLP/HTTP trace receiver for tests: takes POST /v1/traces in the default protocol
// (HTTP/protobuf, uncompressed), decodes the spans and keeps them. The decoder reads the
// protobuf wire format by hand for the few fields of opentelemetry/proto/trace/v1/trace.proto
// and common.proto that tests look at, so the test needs no generated OTLP code.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  /** Empty for a root span. */
  parentSpanId: string;
  name: string;
  /** 1 internal, 2 server, 3 client (SpanKind in trace.proto). */
  kind: number;
  attributes: Record<string, AttributeValue>;
  /** 0 unset, 1 ok, 2 error. */
  status: { code: number; message: string };
  /** The resource's attributes (service.name…). */
  resource: Record<string, AttributeValue>;
}

export type AttributeValue = string | boolean | number | AttributeValue[];

/** Field number → values, in order: a varint as bigint, a length-delimited field as bytes. */
type Fields = Map<number, (bigint | Buffer)[]>;

function readVarint(bytes: Buffer, at: number): [bigint, number] {
  let value = 0n;
  for (let shift = 0n; ; shift += 7n) {
    const byte = bytes[at++]!;
    value |= BigInt(byte & 0x7f) << shift;
    if (byte < 0x80) return [value, at];
  }
}

function fieldsOf(bytes: Buffer): Fields {
  const fields: Fields = new Map();
  for (let at = 0; at < bytes.length; ) {
    const [key, next] = readVarint(bytes, at);
    at = next;
    const field = Number(key >> 3n);
    let value: bigint | Buffer;
    switch (Number(key & 7n)) {
      case 0:
        [value, at] = readVarint(bytes, at);
        break;
      case 1:
        value = bytes.subarray(at, (at += 8));
        break;
      case 2: {
        const [length, start] = readVarint(bytes, at);
        value = bytes.subarray(start, (at = start + Number(length)));
        break;
      }
      case 5:
        value = bytes.subarray(at, (at += 4));
        break;
      default:
        throw new Error(`unsupported wire type in field ${field}`);
    }
    fields.set(field, [...(fields.get(field) ?? []), value]);
  }
  return fields;
}

const bytesOf = (fields: Fields, field: number): Buffer[] => (fields.get(field) ?? []) as Buffer[];
const one = (fields: Fields, field: number): Buffer => bytesOf(fields, field)[0] ?? Buffer.alloc(0);
const varint = (fields: Fields, field: number): number => Number((fields.get(field)?.[0] as bigint | undefined) ?? 0n);

/** common.proto AnyValue: string 1, bool 2, int 3, double 4, array 5 (of AnyValue in field 1). */
function anyValue(bytes: Buffer): AttributeValue {
  const fields = fieldsOf(bytes);
  if (fields.has(1)) return one(fields, 1).toString("utf8");
  if (fields.has(2)) return varint(fields, 2) !== 0;
  if (fields.has(3)) return varint(fields, 3);
  if (fields.has(4)) return one(fields, 4).readDoubleLE(0);
  if (fields.has(5)) return bytesOf(fieldsOf(one(fields, 5)), 1).map(anyValue);
  throw new Error("unsupported AnyValue");
}

/** Repeated KeyValue (key 1, value 2). */
function attributesOf(keyValues: Buffer[]): Record<string, AttributeValue> {
  return Object.fromEntries(
    keyValues.map((bytes) => {
      const fields = fieldsOf(bytes);
      return [one(fields, 1).toString("utf8"), anyValue(one(fields, 2))];
    }),
  );
}

/** ExportTraceServiceRequest → ResourceSpans (1) → ScopeSpans (2) → Span (2). */
export function decodeTraces(body: Buffer): ReceivedSpan[] {
  return bytesOf(fieldsOf(body), 1).flatMap((resourceSpans) => {
    const fields = fieldsOf(resourceSpans);
    const resource = attributesOf(bytesOf(fieldsOf(one(fields, 1)), 1));
    return bytesOf(fields, 2).flatMap((scopeSpans) =>
      bytesOf(fieldsOf(scopeSpans), 2).map((bytes) => {
        const span = fieldsOf(bytes);
        const status = fieldsOf(one(span, 15));
        return {
          traceId: one(span, 1).toString("hex"),
          spanId: one(span, 2).toString("hex"),
          parentSpanId: one(span, 4).toString("hex"),
          name: one(span, 5).toString("utf8"),
          kind: varint(span, 6),
          attributes: attributesOf(bytesOf(span, 9)),
          status: { code: varint(status, 3), message: one(status, 2).toString("utf8") },
          resource,
        };
      }),
    );
  });
}

export interface OtlpReceiver {
  /** What OTEL_EXPORTER_OTLP_ENDPOINT should be: the exporter appends /v1/traces. */
  url: string;
  spans: ReceivedSpan[];
  /** Export requests received (any path). */
  requests: number;
  /** Resolves with the spans received so far once `done(spans)` holds; rejects after `timeoutMs`. */
  waitFor(done: (spans: ReceivedSpan[]) => boolean, timeoutMs?: number): Promise<ReceivedSpan[]>;
  close(): Promise<void>;
}

export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = [];
  const receiver = { requests: 0 };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      receiver.requests += 1;
      if (req.method !== "POST" || req.url !== "/v1/traces" || req.headers["content-type"] !== "application/x-protobuf") {
        res.writeHead(400).end();
        return;
      }
      spans.push(...decodeTraces(Buffer.concat(chunks)));
      // An empty ExportTraceServiceResponse: everything was accepted.
      res.writeHead(200, { "content-type": "application/x-protobuf" }).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(receiver, {
    url: `http://127.0.0.1:${port}`,
    spans,
    async waitFor(done: (spans: ReceivedSpan[]) => boolean, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      while (!done(spans)) {
        if (Date.now() > deadline) throw new Error(`spans not received within ${timeoutMs} ms; got: ${spans.map((span) => span.name).join(", ")}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      return spans;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  });
}
