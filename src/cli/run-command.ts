import { toJsonString } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { type RunEvent, RunEventSchema, RunService } from "../../gen/fermilink/runner/v1/run_pb.js";
import { COLOR, exitSucceeded, PLAIN, TerminalRenderer } from "./render.js";

export interface RunCommandOptions {
  prompt: string;
  url: string;
  /** Sent as `Authorization: Bearer <token>` on every call; never printed. */
  token: string | undefined;
  session: string;
  package: string;
  user: string;
  sandbox: string;
  provider: string;
  detach: boolean;
  json: boolean;
  /**
   * How long to wait for the server to answer: connect, then the response
   * headers (sent with the run's first event). Not a limit on the stream, which
   * may stay quiet for minutes while a provider thinks.
   */
  connectTimeoutMs: number;
}

/** The default of `--connect-timeout`. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 30_000;

/** Exit codes of `fermilink-runner run` (also in the usage text and the README). */
export const RUN_EXIT = {
  succeeded: 0,
  failed: 1,
  usage: 2,
  /** No run: the server could not be reached, did not answer in time, or refused the request. */
  unreachable: 3,
  /**
   * The stream ended after the run began (its first event) but before its exit event: the
   * outcome is unknown, so a script must not take it for a refusal and simply start it again.
   */
  lost: 4,
  interrupted: 130,
  /** Stopped by SIGHUP (its terminal closed) or SIGTERM: 128 + the signal, as a shell reports it. */
  hangup: 129,
  terminated: 143,
  /** The reader of our output went away (`| head`): what a shell reports for SIGPIPE. */
  brokenPipe: 141,
} as const;

const SPINNER = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/**
 * `fermilink-runner run`: stream one run from a server to the terminal.
 * Returns the process exit code ({@link RUN_EXIT}): the run's own verdict
 * (`ExitEvent.succeeded`) decides between 0 and 1, because a provider may
 * exit 0 without finishing. Ctrl-C cancels the call, which ends the run on
 * the server unless it was started with `--detach`.
 */
export async function runCommand(opts: RunCommandOptions): Promise<number> {
  const out = process.stdout;
  const tty = out.isTTY === true && !opts.json;
  const st = tty ? COLOR : PLAIN;
  const renderer = new TerminalRenderer(st);
  // On the transport, not the call: every call this command makes carries it.
  const { token } = opts;
  const bearer: Interceptor[] =
    token === undefined
      ? []
      : [
          (next) => (req) => {
            req.header.set("Authorization", `Bearer ${token}`);
            return next(req);
          },
        ];
  const client = createClient(
    RunService,
    createConnectTransport({ baseUrl: opts.url, httpVersion: "1.1", interceptors: bearer }),
  );
  const abort = new AbortController();
  let stoppedBy: StopSignal | "epipe" | null = null;
  // A server that takes the connection but never answers (a hung process, a proxy with
  // nothing behind it) would otherwise leave this command waiting forever.
  let unanswered = false;
  const answerTimer = setTimeout(() => {
    unanswered = true;
    abort.abort();
  }, opts.connectTimeoutMs);
  // Ctrl-C, a closed terminal or a supervisor's stop: the call ends, so the run ends on the
  // server (client_gone) unless detached, and the command says so. Node's default for SIGHUP and
  // SIGTERM would end it silently mid-line.
  const onSignal = (signal: StopSignal) => {
    stoppedBy ??= signal;
    abort.abort();
  };
  // Without this, `run ... | head` dies on an unhandled EPIPE with a stack trace.
  const onOutError = (err: NodeJS.ErrnoException) => {
    if (err.code !== "EPIPE") throw err;
    stoppedBy ??= "epipe";
    abort.abort();
  };
  for (const signal of STOP_SIGNALS) process.once(signal, onSignal);
  out.on("error", onOutError);
  let spinner: NodeJS.Timeout | undefined;
  let queuedText = "";
  let frame = 0;
  const drawSpinner = () => {
    out.write(`\r\x1b[2K${st.dim(`${SPINNER[frame]} ${queuedText}`)}`);
    frame = (frame + 1) % SPINNER.length;
  };
  const stopSpinner = () => {
    if (spinner) clearInterval(spinner);
    spinner = undefined;
    if (queuedText) out.write("\r\x1b[2K");
    queuedText = "";
  };
  let last: RunEvent | undefined;
  try {
    for await (const event of client.run(
      {
        userPrompt: opts.prompt,
        sessionId: opts.session,
        packageId: opts.package,
        userId: opts.user,
        sandbox: opts.sandbox,
        provider: opts.provider,
        detach: opts.detach,
      },
      { signal: abort.signal, onHeader: () => clearTimeout(answerTimer) },
    )) {
      last = event;
      if (opts.json) {
        out.write(`${toJsonString(RunEventSchema, event)}\n`);
        continue;
      }
      if (event.event.case === "queued" && tty) {
        // On a terminal, waiting is one animated line, not a line per update.
        queuedText = `queued ${event.event.value.position}/${event.event.value.queueSize}`;
        drawSpinner();
        spinner ??= setInterval(drawSpinner, 100);
        continue;
      }
      stopSpinner();
      out.write(renderer.push(event));
    }
  } catch (err) {
    stopSpinner();
    out.write(renderer.end());
    if (stoppedBy !== null) return stopped(stoppedBy, last, opts.detach);
    // Broken after the exit event (the connection cut before the stream's end): the outcome
    // is known and shown, so it decides, not the break.
    if (last?.event.case === "exit")
      return exitSucceeded(last) ? RUN_EXIT.succeeded : RUN_EXIT.failed;
    if (unanswered) {
      const seconds = opts.connectTimeoutMs / 1000;
      process.stderr.write(
        `fermilink-runner: no answer from the server within ${seconds} s (${opts.url}); see --connect-timeout\n`,
      );
      return RUN_EXIT.unreachable;
    }
    const ce = ConnectError.from(err);
    process.stderr.write(`fermilink-runner: ${Code[ce.code]}: ${ce.rawMessage} (${opts.url})\n`);
    // The server refuses before the first event; an error after it is the stream breaking.
    if (last !== undefined) return lostRun(last);
    // The server's message names the header; the fix on this side is an option.
    if (ce.code === Code.Unauthenticated)
      process.stderr.write(
        token === undefined
          ? "fermilink-runner: this server needs a token: pass it with --token or FERMILINK_RUNNER_TOKEN\n"
          : "fermilink-runner: the token given (--token or FERMILINK_RUNNER_TOKEN) was not accepted\n",
      );
    return RUN_EXIT.unreachable;
  } finally {
    clearTimeout(answerTimer);
    stopSpinner();
    for (const signal of STOP_SIGNALS) process.off(signal, onSignal);
  }
  out.write(renderer.end());
  if (stoppedBy !== null) return stopped(stoppedBy, last, opts.detach);
  if (last?.event.case !== "exit") return lostRun(last);
  return exitSucceeded(last) ? RUN_EXIT.succeeded : RUN_EXIT.failed;
}

function lostRun(last: RunEvent | undefined): number {
  const run = last?.runId ? `run ${last.runId}` : "the run";
  process.stderr.write(
    `fermilink-runner: the stream ended before the run's exit event; the outcome of ${run} is unknown\n`,
  );
  return RUN_EXIT.lost;
}

const STOP_SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
type StopSignal = (typeof STOP_SIGNALS)[number];

function stopped(by: StopSignal | "epipe", last: RunEvent | undefined, detach: boolean): number {
  if (by === "epipe") return RUN_EXIT.brokenPipe;
  const run = last?.runId ? `run ${last.runId}` : "the run";
  const fate = detach ? "goes on (detached)" : "is ended by the server";
  // On a terminal the line starts after the echoed ^C.
  const lead = process.stderr.isTTY ? "\n" : "";
  const what = by === "SIGINT" ? "interrupted" : `stopped by ${by}`;
  process.stderr.write(`${lead}fermilink-runner: ${what}; ${run} ${fate}\n`);
  return by === "SIGINT"
    ? RUN_EXIT.interrupted
    : by === "SIGHUP"
      ? RUN_EXIT.hangup
      : RUN_EXIT.terminated;
}
