import http2 from "node:http2";
import type net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import {
  createDualProtocolServer,
  type DualProtocolServer,
} from "../../src/transport/http-server.js";

let front: DualProtocolServer | undefined;
afterEach(async () => {
  await front?.close(0);
  front = undefined;
});

/**
 * Whether node turned Nagle's algorithm off on `socket`: it keeps no public
 * record, only the internal `kSetNoDelay` flag that `setNoDelay` and a server's
 * `noDelay` option set (node 20), so the test reads that.
 */
function noDelayOf(socket: net.Socket): unknown {
  const key = Object.getOwnPropertySymbols(socket).find((s) => String(s) === "Symbol(kSetNoDelay)");
  return key === undefined ? undefined : (socket as unknown as Record<symbol, unknown>)[key];
}

describe("the TCP front", () => {
  it("turns Nagle's algorithm off on every connection, HTTP/1.1 as h2c, as node's own HTTP servers do", async () => {
    const seen: unknown[] = [];
    front = createDualProtocolServer((req, res) => {
      // An HTTP/2 request's socket is a proxy that hides the connection's own properties.
      const session = "stream" in req ? req.stream.session : undefined;
      const kSocket =
        session &&
        Object.getOwnPropertySymbols(session).find((s) => String(s) === "Symbol(socket)");
      const socket =
        session && kSocket ? (session as unknown as Record<symbol, unknown>)[kSocket] : req.socket;
      seen.push(noDelayOf(socket as net.Socket));
      res.end("ok");
    });
    const port = await front.listen("127.0.0.1", 0);
    expect(await (await fetch(`http://127.0.0.1:${port}/`)).text()).toBe("ok");
    const session = http2.connect(`http://127.0.0.1:${port}`);
    try {
      await new Promise<void>((resolve, reject) => {
        const call = session.request({ ":path": "/" });
        call.on("error", reject);
        call.resume();
        call.on("end", resolve);
      });
    } finally {
      session.close();
    }
    expect(seen).toEqual([true, true]);
  });
});
