import net from "node:net";

/** A raw HTTP/1.1 answer: status code, lower-cased headers (repeats joined) and body. */
export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * Send one HTTP/1.1 request written by hand (so a header can be repeated,
 * which fetch folds into one) with `Connection: close`, and read the answer.
 * `headers` are [name, value] pairs, sent in order.
 */
export function rawRequest(
  port: number,
  method: string,
  target: string,
  headers: [string, string][] = [],
  body = "",
): Promise<RawResponse> {
  const lines = [`${method} ${target} HTTP/1.1`, "Host: 127.0.0.1", "Connection: close"];
  for (const [k, v] of headers) lines.push(`${k}: ${v}`);
  if (body !== "" || method === "POST") lines.push(`Content-Length: ${Buffer.byteLength(body)}`);
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1", () => {
      socket.write(`${lines.join("\r\n")}\r\n\r\n${body}`);
    });
    const chunks: Buffer[] = [];
    socket.on("data", (d: Buffer) => chunks.push(d));
    socket.on("error", reject);
    socket.on("close", () => {
      const text = Buffer.concat(chunks).toString("latin1");
      const split = text.indexOf("\r\n\r\n");
      const [statusLine = "", ...headerLines] = text.slice(0, split).split("\r\n");
      const out: Record<string, string> = {};
      for (const line of headerLines) {
        const colon = line.indexOf(":");
        const k = line.slice(0, colon).trim().toLowerCase();
        const v = line.slice(colon + 1).trim();
        out[k] = out[k] === undefined ? v : `${out[k]}, ${v}`;
      }
      resolve({
        status: Number(statusLine.split(" ")[1]),
        headers: out,
        body: split === -1 ? "" : text.slice(split + 4),
      });
    });
  });
}

/**
 * POST over HTTP/1.1 with `Expect: 100-continue`, as curl does for a large
 * body: `body` is sent only once the server says `100 Continue`. What came
 * back (raw), whether the server invited the body, and whether it closed the
 * connection (a server that invited the body and then waits for it gives no
 * answer within `waitMs`).
 */
export function expectContinue(
  port: number,
  path: string,
  type: string,
  body: Buffer,
  waitMs = 3000,
): Promise<{ text: string; continued: boolean; closed: boolean }> {
  return new Promise((resolve) => {
    let text = "";
    let continued = false;
    const socket = net.connect(port, "127.0.0.1", () => {
      socket.write(
        `POST ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: ${type}\r\n` +
          `Content-Length: ${body.length}\r\nExpect: 100-continue\r\n\r\n`,
      );
    });
    const done = (closed: boolean) => {
      clearTimeout(wait);
      socket.destroy();
      resolve({ text, continued, closed });
    };
    const wait = setTimeout(() => done(false), waitMs);
    socket.on("data", (d: Buffer) => {
      text += d.toString("latin1");
      if (!continued && text.startsWith("HTTP/1.1 100 Continue\r\n\r\n")) {
        continued = true;
        socket.write(body);
      }
    });
    socket.on("error", () => {});
    socket.on("close", () => done(true));
  });
}
