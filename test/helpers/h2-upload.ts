import http2 from "node:http2";

/** What an h2c request whose body the server refused to read got back. */
export interface H2UploadResult {
  status: number | undefined;
  body: Buffer;
  trailers: http2.IncomingHttpHeaders;
  /** The stream closed within the wait (false: it was left open). */
  closed: boolean;
  /** The RST_STREAM code it closed with, if any (0 is NO_ERROR). */
  rstCode: number | undefined;
}

/**
 * POST `bytes` over h2c without ending the request and without waiting for
 * the write: a server that stops reading at its limit must still answer and
 * end the stream. (A client that waited for its own write would wait for
 * flow-control window updates the server, no longer reading, never sends.)
 */
export async function h2Upload(
  baseUrl: string,
  headers: http2.OutgoingHttpHeaders,
  /** That many spaces, or these bytes. */
  bytes: number | Buffer,
  waitMs = 3000,
): Promise<H2UploadResult> {
  const session = http2.connect(baseUrl);
  session.on("error", () => {});
  try {
    const stream = session.request({ ":method": "POST", ...headers });
    stream.on("error", () => {});
    let status: number | undefined;
    let trailers: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    stream.on("response", (h) => {
      status = h[":status"];
    });
    stream.on("trailers", (t) => {
      trailers = t;
    });
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.write(typeof bytes === "number" ? Buffer.alloc(bytes, 0x20) : bytes);
    const closed = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), waitMs);
      stream.once("close", () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    return { status, body: Buffer.concat(chunks), trailers, closed, rstCode: stream.rstCode };
  } finally {
    session.destroy();
  }
}
