// Structured JSON logs (pino) on stderr, one object per line with a level. Anything that could
// hold a credential is redacted by path, so a careless log call cannot print it.
import { pino, type Logger, type Level } from "pino";

export type { Logger };

export const LOG_LEVELS: readonly Level[] = ["fatal", "error", "warn", "info", "debug", "trace"];

/** How many of the newest warn, error and fatal lines a logger keeps for diagnostics bundles. */
export const RECENT_ERROR_LINES = 100;

const recentErrorLines = new WeakMap<Logger, string[]>();

/**
 * The newest warn, error and fatal lines `log` wrote (as written: already redacted), oldest
 * first; none for a logger that createLogger did not make.
 */
export function recentErrors(log: Logger): readonly string[] {
  return [...(recentErrorLines.get(log) ?? [])];
}

export function createLogger(level: Level, destination: NodeJS.WritableStream = process.stderr): Logger {
  const recent: string[] = [];
  const tee = {
    write(line: string): boolean {
      if (/"level":"(?:warn|error|fatal)"/.test(line)) {
        recent.push(line.trimEnd());
        if (recent.length > RECENT_ERROR_LINES) recent.shift();
      }
      return destination.write(line);
    },
  };
  const log = pino(
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
    tee as pino.DestinationStream,
  );
  recentErrorLines.set(log, recent);
  return log;
}
