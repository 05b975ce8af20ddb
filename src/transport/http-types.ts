import type { connectNodeAdapter } from "@connectrpc/connect-node";

type NodeHandlerFn = ReturnType<typeof connectNodeAdapter>;
/** A request on either protocol the main port speaks (HTTP/1.1 or h2c), as connect-node types it. */
export type AnyRequest = Parameters<NodeHandlerFn>[0];
/** A response on either protocol; connect-node narrows `write` because the two classes' overloads differ. */
export type AnyResponse = Parameters<NodeHandlerFn>[1];

/** Send a JSON body with a status (FermiLink's error shape is `{"detail": ...}`). */
export function sendJson(res: AnyResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
  });
  res.end(text);
}

/**
 * Write and wait until the socket drained when the kernel buffer is full, so
 * a slow reader slows the producer instead of growing server memory. Resolves
 * false when the response closed first.
 */
export function writeWithBackpressure(res: AnyResponse, chunk: string): Promise<boolean> {
  if (res.destroyed || res.writableEnded) return Promise.resolve(false);
  const ok = res.write(chunk);
  if (ok) return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (drained: boolean) => {
      res.off("drain", onDrain);
      res.off("close", onClose);
      resolve(drained);
    };
    const onDrain = () => done(true);
    const onClose = () => done(false);
    res.on("drain", onDrain);
    res.on("close", onClose);
  });
}

/** Read a request body up to `limit` bytes; null when it is larger. */
export async function readBody(req: AnyRequest, limit: number): Promise<Buffer | null> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) return null;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}
