// Structured JSON logs (pino) on stderr, one object per line with a level. Anything that could
// hold a credential is redacted by path, so a careless log call cannot print it.
import { pino, type Logger, type Level } from "pino";

export type { Logger };

export const LOG_LEVELS: readonly Level[] = ["fatal", "error", "warn", "info", "debug", "trace"];

export function createLogger(level: Level, destination: NodeJS.WritableStream = process.stderr): Logger {
  return pino(
    {
      level,
      base: { service: "amctl" },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: {
        paths: ["authorization", "*.authorization", "headers.authorization", "token", "*.token", "env", "*.env"],
        censor: "[redacted]",
      },
    },
    destination as pino.DestinationStream,
  );
}
