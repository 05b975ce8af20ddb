/**
 * RunService.Run and Attach written straight to the response for the common
 * case: protobuf over gRPC (HTTP/2) or over the Connect streaming protocol,
 * without compression or a deadline. connect-node spends about as much CPU
 * per streamed message as the whole rest of the runner (a chain of async
 * generators, then a promise and two listeners per socket write); here the
 * events available at once become one write of back-to-back envelopes.
 * Every other call (JSON, gRPC-Web, gRPC over HTTP/1.1, compression,
 * timeouts) falls through to connect-node's handler, which speaks the full
 * protocols. Both give the same bytes per message.
 */
import { type DescMessage, fromBinary, type MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  AttachRequestSchema,
  RunRequestSchema,
  RunService,
} from "../../../gen/fermilink/runner/v1/run_pb.js";
import type { AuthTokens } from "../../auth/auth-tokens.js";
import { RunnerError, toRunnerError } from "../../errors/runner-error.js";
import { toConnectError } from "../../errors/status-table.js";
import type { RunEvent } from "../../events/run-event.js";
import { EnvelopeBuffer } from "../../events/run-event-wire.js";
import type { Logger } from "../../log/logger.js";
import type { StreamObserver } from "../../metrics/metrics.js";
import { StreamTally } from "../../metrics/stream-tally.js";
import { RunAborted } from "../../run/run-abort.js";
import type { RunPipeline } from "../../run/run-pipeline.js";
import {
  type AnyRequest,
  type AnyResponse,
  declaredBodyBytes,
  onClientGone,
  readBody,
  responseClosed,
  stopReadingBody,
  writeWithBackpressure,
} from "../http-types.js";
import { authenticate } from "../token-guard.js";
import { MAX_REQUEST_BYTES, undecodableRequest } from "./request-guard.js";
import { openAttach, openRun } from "./run-service.js";

type Protocol = "grpc" | "connect";
type Method = "run" | "attach";

const PATHS = new Map<string, Method>([
  [`/${RunService.typeName}/${RunService.method.run.name}`, "run"],
  [`/${RunService.typeName}/${RunService.method.attach.name}`, "attach"],
]);

/**
 * Bytes gathered before a write. Small enough that an HTTP/2 stream keeps
 * flowing inside a client's 64 KB window (64 KB writes made the server wait
 * for each window update, and gRPC lost a fifth of its rate); big enough to
 * carry ~30 events per write.
 */
const WRITE_CHUNK = 8 * 1024;
/**
 * Write buffers the socket has finished with, shared by every call: a stream
 * at full speed would otherwise leave one 8 KB buffer per write for the GC,
 * and with the young generation's 16 MB semi-spaces a few MB of them wait in
 * the malloc heap for each scavenge. Only buffers whose write completed come
 * back, so none is reused while a socket still reads it.
 */
const spareWriteBuffers: Buffer[] = [];
/** Room for a full write chunk and one more event of up to 8 KB (larger ones get their own). */
const WRITE_BUFFER_BYTES = 2 * WRITE_CHUNK;
/** Enough for the writes in flight at once; more go to the GC. */
const MAX_SPARE_WRITE_BUFFERS = 32;
let writeBuffersMade = 0;

/** Write buffers made so far, for tests: a stream reuses a few. */
export function writeBuffersAllocated(): number {
  return writeBuffersMade;
}

function writeBuffer(): Buffer {
  const spare = spareWriteBuffers.pop();
  if (spare) return spare;
  writeBuffersMade++;
  return Buffer.allocUnsafeSlow(WRITE_BUFFER_BYTES);
}

/** A write buffer no socket reads any more, back to the pool (while it has room). */
function spareWriteBuffer(buffer: Buffer): void {
  if (spareWriteBuffers.length < MAX_SPARE_WRITE_BUFFERS) spareWriteBuffers.push(buffer);
}

/** The Connect protocol's end-of-stream envelope flag. */
const END_STREAM = 0b10;

const identity = (v: string | string[] | undefined) => v === undefined || v === "identity";

/** The protocol when this call can take the direct path, else null. */
function directProtocol(req: AnyRequest): Protocol | null {
  const h = req.headers;
  if (req.method !== "POST" || h["grpc-timeout"] !== undefined) return null;
  if (h["connect-timeout-ms"] !== undefined) return null;
  const type = h["content-type"];
  if (type === "application/grpc" || type === "application/grpc+proto") {
    return req.httpVersionMajor === 2 && identity(h["grpc-encoding"]) ? "grpc" : null;
  }
  if (type === "application/connect+proto") {
    return identity(h["connect-content-encoding"]) ? "connect" : null;
  }
  return null;
}

/** The one message of a server-streaming request body (envelopes as in connect-node's errors). */
function requestMessage(body: Buffer): Uint8Array {
  if (body.length === 0) {
    throw new ConnectError(
      "protocol error: missing input message for server-streaming method",
      Code.InvalidArgument,
    );
  }
  if (body.length < 5 || body.length < 5 + body.readUInt32BE(1)) {
    throw new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument);
  }
  if ((body[0] ?? 0) !== 0) {
    throw new ConnectError(
      "protocol error: received a compressed or flagged message without an encoding",
      Code.InvalidArgument,
    );
  }
  const end = 5 + body.readUInt32BE(1);
  if (end !== body.length) {
    throw new ConnectError(
      "protocol error: received extra input message for server-streaming method",
      Code.InvalidArgument,
    );
  }
  return body.subarray(5, end);
}

/** The request message as `schema`, or `invalid_argument` saying what was expected. */
function decode<Desc extends DescMessage>(schema: Desc, message: Uint8Array): MessageShape<Desc> {
  try {
    return fromBinary(schema, message);
  } catch (err) {
    throw undecodableRequest(schema, err);
  }
}

/** `NotFound` → `not_found`, the Connect protocol's spelling. */
function connectCodeName(code: Code): string {
  return Code[code].replace(/[A-Z]/g, (c, i: number) => (i === 0 ? "" : "_") + c.toLowerCase());
}

/** Headers, events and the closing status of one call, in its protocol. */
class CallWriter {
  private readonly envelopes = new EnvelopeBuffer();

  constructor(
    private readonly res: AnyResponse,
    private readonly protocol: Protocol,
  ) {}

  /** Write what is gathered; false when the client is gone. */
  flush(): Promise<boolean> {
    this.head();
    const buffer = writeBuffer();
    const chunk = this.envelopes.take(buffer);
    if (chunk.buffer !== buffer.buffer) {
      // Too big for a write buffer: this chunk is its own, and the buffer goes back unused.
      spareWriteBuffer(buffer);
      return writeWithBackpressure(this.res, chunk);
    }
    return writeWithBackpressure(this.res, chunk, () => spareWriteBuffer(buffer));
  }

  add(event: RunEvent): void {
    this.envelopes.add(event);
  }

  get gathered(): number {
    return this.envelopes.size;
  }

  /** End the call: OK, or `error` as gRPC trailers / the Connect end-of-stream message. */
  finish(error: ConnectError | null): void {
    const res = this.res;
    if (responseClosed(res)) return;
    this.head();
    if (this.protocol === "grpc") {
      res.addTrailers(
        error === null
          ? { "grpc-status": "0" }
          : {
              "grpc-status": String(error.code),
              "grpc-message": encodeURIComponent(error.rawMessage),
            },
      );
      res.end();
      return;
    }
    const end =
      error === null
        ? {}
        : { error: { code: connectCodeName(error.code), message: error.rawMessage } };
    this.envelopes.frame(END_STREAM, Buffer.from(JSON.stringify(end)));
    res.end(this.envelopes.take());
  }

  private head(): void {
    if (this.res.headersSent) return;
    this.res.writeHead(200, {
      "content-type":
        this.protocol === "grpc" ? "application/grpc+proto" : "application/connect+proto",
    });
  }
}

/**
 * The direct path's request handler: true when it took the call, false when
 * connect-node's handler should serve it.
 */
export function createDirectRunStream(
  deps: DirectDeps,
): (req: AnyRequest, res: AnyResponse) => boolean {
  return (req, res) => {
    const method = PATHS.get((req.url ?? "").split("?", 1)[0] ?? "");
    if (method === undefined) return false;
    const protocol = directProtocol(req);
    if (protocol === null) return false;
    serve(req, res, method, new CallWriter(res, protocol), deps).catch((err: unknown) => {
      deps.logger.error({ err }, `RunService ${method} crashed`);
      res.destroy();
    });
    return true;
  };
}

interface DirectDeps {
  pipeline: RunPipeline;
  observer: StreamObserver;
  logger: Logger;
  /** The main port's bearer tokens; null = no auth. */
  auth: AuthTokens | null;
  /** How long the request message may take to arrive (body-deadline.ts). */
  bodyTimeoutMs: number;
}

async function serve(
  req: AnyRequest,
  res: AnyResponse,
  method: Method,
  out: CallWriter,
  deps: DirectDeps,
): Promise<void> {
  const arrivedAt = Date.now();
  // A client that goes away ends its run (reason client_gone) unless it was detached.
  const gone = new AbortController();
  onClientGone(req, res, () => gone.abort());
  let events: AsyncIterable<readonly RunEvent[]>;
  try {
    let caller: ReturnType<typeof authenticate>;
    try {
      caller = authenticate(deps.auth, req);
    } catch (err) {
      // Refused whatever its body says, but a body within the limit is still read (and dropped):
      // closing the connection under a client still writing it (HTTP/1.1) gave that client a
      // broken pipe instead of the refusal. A larger one is not read: the connection closes.
      const declared = declaredBodyBytes(req) ?? 0;
      const drained =
        declared <= MAX_REQUEST_BYTES &&
        (await readBody(req, MAX_REQUEST_BYTES, deps.bodyTimeoutMs).catch(() => null)) !== null;
      if (!drained) stopReadingBody(req, res);
      throw err;
    }
    // A body declared over the limit is refused unread: with `Expect: 100-continue`, never invited.
    const declared = declaredBodyBytes(req) ?? 0;
    let body: Buffer | null;
    try {
      body =
        declared > MAX_REQUEST_BYTES
          ? null
          : await readBody(req, MAX_REQUEST_BYTES, deps.bodyTimeoutMs);
    } catch (err) {
      // The client went away mid-upload (as on POST /run): nobody to answer, and nothing went
      // wrong here. Taken for a runner failure, each such call logged an error with its stack.
      if (!(err instanceof RunnerError)) return;
      // Its body stalled (BODY_TIMEOUT): answered, and the rest of it is never read.
      stopReadingBody(req, res);
      throw err;
    }
    if (body === null) {
      // The rest of the body is never read: the HTTP/1.1 connection closes, the h2 stream is reset.
      stopReadingBody(req, res);
      throw new ConnectError(
        `request message larger than ${MAX_REQUEST_BYTES} bytes`,
        Code.ResourceExhausted,
      );
    }
    const message = requestMessage(body);
    events =
      method === "run"
        ? await openRun(deps.pipeline, decode(RunRequestSchema, message), gone.signal, caller)
        : openAttach(deps.pipeline, decode(AttachRequestSchema, message), caller, gone.signal);
  } catch (err) {
    out.finish(asConnectError(err, deps.logger));
    return;
  }
  out.finish(
    await stream(events, out, deps.observer, method === "run" ? arrivedAt : null, deps.logger),
  );
}

/** Write the events; the error that ended them, if any. */
async function stream(
  events: AsyncIterable<readonly RunEvent[]>,
  out: CallWriter,
  observer: StreamObserver,
  arrivedAt: number | null,
  logger: Logger,
): Promise<ConnectError | null> {
  const tally = new StreamTally(observer, "connect");
  let first = true;
  const flush = () => {
    if (first && arrivedAt !== null) observer.firstEventSent("connect", Date.now() - arrivedAt);
    first = false;
    return out.flush();
  };
  // The tally is reported after each write the stream took, never before or in a `finally`:
  // events gathered for a write that found the client gone (up to a chunk, ~30) were not
  // streamed. An error ends the loop only between batches, when nothing is gathered.
  try {
    for await (const batch of events) {
      for (const event of batch) {
        out.add(event);
        tally.addEvent(event.body);
        if (out.gathered >= WRITE_CHUNK) {
          if (!(await flush())) return null;
          tally.report();
        }
      }
      if (out.gathered > 0) {
        if (!(await flush())) return null;
        tally.report();
      }
    }
    return null;
  } catch (err) {
    return asConnectError(err, logger);
  }
}

function asConnectError(err: unknown, logger: Logger): ConnectError {
  if (err instanceof ConnectError) return err;
  const re = toRunnerError(err);
  // A RunAborted is the caller leaving before its run's first event: nothing went wrong.
  if (re.code === "INTERNAL" && !(err instanceof RunAborted)) {
    logger.error({ err }, "RunService call failed");
  }
  return toConnectError(re);
}
