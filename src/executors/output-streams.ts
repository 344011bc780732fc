// The output streams of an attempt, and how the wire names them.
import { OutputStream } from "../gen/agentmachine/v1/output_pb.js";
import type { OutputStreamName } from "../store/store.js";

export const OUTPUT_STREAMS: readonly OutputStreamName[] = ["stdout", "stderr"];

const streamEnums: Readonly<Record<OutputStreamName, OutputStream>> = { stdout: OutputStream.STDOUT, stderr: OutputStream.STDERR };

/** The wire's name of a stream. */
export const outputStreamEnum = (stream: OutputStreamName): OutputStream => streamEnums[stream];

/** The stream a wire value names (validation has refused UNSPECIFIED and unknown values). */
export const outputStreamName = (stream: OutputStream): OutputStreamName => (stream === OutputStream.STDERR ? "stderr" : "stdout");
