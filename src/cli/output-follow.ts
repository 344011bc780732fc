// Reading an execution's output (OutputService.WatchOutput) the way `amctl logs -f` and
// `amctl submit --follow-output` do: bytes written out as they come, and a stream that breaks
// (the network, a server restart) called again from the offsets reached, so that every byte is
// written once, in order, whatever happens in between.
import { Code, ConnectError } from "@connectrpc/connect";
import { OutputStream } from "../gen/agentmachine/v1/output_pb.js";
import { OutputService } from "../gen/agentmachine/v1/output_service_pb.js";
import { serviceClient } from "./client.js";

export interface OutputRead {
  server: string;
  name: string;
  /** 0: the latest attempt when the read starts (it is then kept across reconnects). */
  attempt: number;
  streams: OutputStream[];
  offsets: { stdout: bigint; stderr: bigint };
  follow: boolean;
  /** Gets each stream's bytes, in order, each once. */
  write: (stream: OutputStream, data: Uint8Array) => void;
  signal?: AbortSignal;
}

export interface OutputEnded {
  attempt: number;
  /** The streams that ended, with their length and whether output beyond it was dropped. */
  ends: { stream: OutputStream; offset: bigint; truncated: boolean }[];
}

const RETRY_MIN_MS = 250;
const RETRY_MAX_MS = 5000;
/** A follower gives up after this long without getting through to a server. */
const GIVE_UP_MS = 120_000;

/**
 * A broken stream, not the server's answer: the server's refusals carry an ErrorInfo detail;
 * Unavailable (a server going away, or none listening) is worth another try too.
 */
function isBreak(error: unknown): boolean {
  if (!(error instanceof ConnectError)) return false;
  if (error.code === Code.Unavailable) return true;
  return [Code.Internal, Code.Unknown, Code.Canceled, Code.Aborted].includes(error.code) && error.details.length === 0;
}

/** Reads until every asked stream ended (or, without `follow`, until what is stored was read). */
export async function readOutput(read: OutputRead): Promise<OutputEnded> {
  const client = serviceClient(OutputService, read.server);
  const offsets = { ...read.offsets };
  let attempt = read.attempt;
  const ends: OutputEnded["ends"] = [];
  let backoff = RETRY_MIN_MS;
  let lastContact = Date.now();
  for (;;) {
    try {
      const request = { name: read.name, attempt, streams: read.streams, stdoutOffset: offsets.stdout, stderrOffset: offsets.stderr, follow: read.follow };
      for await (const { kind } of client.watchOutput(request, { signal: read.signal })) {
        lastContact = Date.now();
        backoff = RETRY_MIN_MS;
        if (kind.case === undefined) continue;
        attempt = kind.value.attempt;
        const key = kind.value.stream === OutputStream.STDERR ? "stderr" : "stdout";
        if (kind.case === "end") {
          ends.push({ stream: kind.value.stream, offset: kind.value.offset, truncated: kind.value.truncated });
          continue;
        }
        // Bytes before the offset reached were written already (the server does not resend them; this is the client's own guard).
        const skip = offsets[key] - kind.value.offset;
        const data = skip > 0n ? kind.value.data.subarray(Number(skip)) : kind.value.data;
        if (kind.value.offset > offsets[key]) throw new Error(`the server skipped ${key} bytes ${offsets[key]} to ${kind.value.offset}`);
        if (data.length > 0) read.write(kind.value.stream, data);
        offsets[key] = kind.value.offset + BigInt(kind.value.data.length);
      }
      return { attempt, ends };
    } catch (error) {
      if (read.signal?.aborted || !read.follow || !isBreak(error) || Date.now() - lastContact > GIVE_UP_MS) throw error;
      await new Promise((resolve) => setTimeout(resolve, backoff));
      backoff = Math.min(backoff * 2, RETRY_MAX_MS);
    }
  }
}
