// The web console on the API's port: `/` redirects to `/console/`, which serves the console's
// files (console-assets.ts) and `/console/config.json`, what the page may offer. Every other
// path goes on to `next` (the unknown-route answer). Only GET and HEAD, and never a request in
// a gRPC or Connect content type, so no RPC can land here.
import type { ConsoleAssets } from "./console-assets.js";
import type { Fallback } from "./unknown-route.js";

type Response = Parameters<Fallback>[1];

export interface ConsoleOptions {
  assets: ConsoleAssets;
  /** Whether the console may offer actions (cancel, revoke); the credential still decides. */
  actions: boolean;
}

/**
 * Sent with every console response: scripts, styles and fetches from this origin only (so no
 * inline script can run), never framed, no referrer (an operation's URL names it).
 */
export const CONSOLE_SECURITY_HEADERS: Readonly<Record<string, string>> = {
  "content-security-policy":
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
  "cache-control": "no-cache",
};

function send(res: Response, status: number, headers: Record<string, string>, body: Buffer | string, head: boolean): void {
  res.writeHead(status, { ...CONSOLE_SECURITY_HEADERS, ...headers, "content-length": String(Buffer.byteLength(body)) });
  if (head) res.end();
  else res.end(body);
}

export function consoleRoute(options: ConsoleOptions, next: Fallback): Fallback {
  const config = JSON.stringify({ actions: options.actions });
  return (req, res) => {
    const method = req.method ?? "";
    const contentType = String(req.headers["content-type"] ?? "");
    const path = (req.url ?? "").split("?")[0] ?? "";
    if (
      (method !== "GET" && method !== "HEAD") ||
      contentType.startsWith("application/") ||
      !(path === "/" || path === "/console" || path.startsWith("/console/"))
    ) {
      next(req, res);
      return;
    }
    const head = method === "HEAD";
    if (path === "/" || path === "/console") {
      send(res, 302, { location: "/console/", "content-type": "text/plain; charset=utf-8" }, "see /console/\n", head);
      return;
    }
    const name = path.slice("/console/".length) || "index.html";
    if (name === "config.json") {
      send(res, 200, { "content-type": "application/json" }, config, head);
      return;
    }
    const asset = options.assets.get(name);
    if (asset === undefined) {
      send(res, 404, { "content-type": "text/plain; charset=utf-8" }, `the console has no ${name}\n`, head);
      return;
    }
    asset.then(
      ({ contentType: type, body }) => send(res, 200, { "content-type": type }, body, head),
      (error: unknown) =>
        send(res, 500, { "content-type": "text/plain; charset=utf-8" }, `the console could not be built: ${(error as Error).message}\n`, head),
    );
  };
}
