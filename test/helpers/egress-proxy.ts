// A raw CONNECT to the plane's egress proxy, for tests that attack it with a credential.
import * as http from "node:http";

/** The status the egress proxy on `serverUrl`'s port answers a CONNECT to `target` with, sent with `credential`. */
export function proxyConnectStatus(serverUrl: string, target: string, credential: string): Promise<number> {
  const { hostname, port } = new URL(serverUrl);
  return new Promise<number>((resolve) => {
    const request = http.request({ host: hostname, port, method: "CONNECT", path: target, headers: { "proxy-authorization": `Bearer ${credential}` } });
    request.on("connect", (res, socket) => {
      socket.destroy();
      resolve(res.statusCode ?? 0);
    });
    request.on("response", (res) => resolve(res.statusCode ?? 0));
    request.end();
  });
}
