// Interceptors, composed in src/server/server.ts, outermost first:
//   errors → logging → validation → service.
import { randomUUID } from "node:crypto";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { createValidator } from "@bufbuild/protovalidate";
import { createValidateInterceptor } from "@connectrpc/validate";
import { callProfileFields } from "../api/call-profiles.js";
import type { Logger } from "../api/logger.js";
import { internalError, withGoogleDetails } from "../api/errors.js";
import { markInvalidUtf8, refusingInvalidUtf8 } from "./invalid-utf8.js";

const REQUEST_ID_HEADER = "x-request-id";
const CLIENT_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Errors that are ours to show pass (validation errors with google.rpc details added); anything
 * else becomes an opaque Internal.
 */
function sanitize(error: unknown, requestId: string, procedure: string, log: Logger): ConnectError {
  if (error instanceof ConnectError) {
    error.metadata.set(REQUEST_ID_HEADER, requestId);
    return withGoogleDetails(error);
  }
  log.error({ requestId, procedure, ...callProfileFields(), err: error }, "unexpected error in handler");
  const internal = internalError(requestId);
  internal.metadata.set(REQUEST_ID_HEADER, requestId);
  return internal;
}

async function* sanitizeStream<T>(messages: AsyncIterable<T>, requestId: string, procedure: string, log: Logger): AsyncIterable<T> {
  try {
    yield* messages;
  } catch (error) {
    throw sanitize(error, requestId, procedure, log);
  }
}

/**
 * Outermost: gives each call a request id (the client's x-request-id when well-formed), echoes
 * it in the response headers, and turns anything that is not a ConnectError into an Internal
 * error whose message carries no stack, path or secret.
 */
export function errorInterceptor(log: Logger): Interceptor {
  return (next) => async (req) => {
    const offered = req.header.get(REQUEST_ID_HEADER);
    const requestId = offered !== null && CLIENT_REQUEST_ID.test(offered) ? offered : randomUUID();
    req.header.set(REQUEST_ID_HEADER, requestId);
    try {
      const res = await next(req);
      res.header.set(REQUEST_ID_HEADER, requestId);
      if (res.stream) {
        return { ...res, message: sanitizeStream(res.message, requestId, req.method.name, log) };
      }
      return res;
    } catch (error) {
      throw sanitize(error, requestId, req.url, log);
    }
  };
}

/** One debug line per call, one warn line per server-side failure. Never logs messages. */
export function loggingInterceptor(log: Logger): Interceptor {
  return (next) => async (req) => {
    const started = performance.now();
    const fields = { procedure: `${req.service.typeName}/${req.method.name}`, requestId: req.header.get(REQUEST_ID_HEADER) };
    try {
      const res = await next(req);
      log.debug({ ...fields, ms: Math.round(performance.now() - started) }, "rpc");
      return res;
    } catch (error) {
      const code = error instanceof ConnectError ? error.code : Code.Internal;
      const serverSide = code === Code.Internal || code === Code.Unknown || code === Code.DataLoss;
      log[serverSide ? "warn" : "debug"]({ ...fields, ...callProfileFields(), code: Code[code], ms: Math.round(performance.now() - started) }, "rpc failed");
      throw error;
    }
  };
}

/**
 * Invalid UTF-8 in any string (invalid-utf8.ts), then the protovalidate rules of each request
 * message → InvalidArgument with buf.validate.Violations (to which the error interceptor adds
 * google.rpc.BadRequest).
 */
export function validationInterceptor(): Interceptor {
  markInvalidUtf8();
  return createValidateInterceptor({ validator: refusingInvalidUtf8(createValidator()) });
}
