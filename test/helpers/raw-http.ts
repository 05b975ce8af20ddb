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
