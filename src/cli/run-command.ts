import { toJsonString } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { type RunEvent, RunEventSchema, RunService } from "../../gen/fermilink/runner/v1/run_pb.js";
import { COLOR, exitSucceeded, PLAIN, renderEvent } from "./render.js";

export interface RunCommandOptions {
  prompt: string;
  url: string;
  session: string;
  package: string;
  user: string;
  sandbox: string;
  provider: string;
  detach: boolean;
  json: boolean;
}

const SPINNER = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/**
 * `fermilink-runner run`: stream one run from a server to the terminal.
 * Returns the process exit code: 0 the run completed with return code 0,
 * 1 it failed, 3 the server could not be reached or refused the request,
 * 130 interrupted (Ctrl-C ends the call, and so the run unless detached).
 */
export async function runCommand(opts: RunCommandOptions): Promise<number> {
  const out = process.stdout;
  const tty = out.isTTY === true && !opts.json;
  const st = tty ? COLOR : PLAIN;
  const client = createClient(
    RunService,
    createConnectTransport({ baseUrl: opts.url, httpVersion: "1.1" }),
  );
  const abort = new AbortController();
  let interrupted = false;
  const onSigint = () => {
    interrupted = true;
    abort.abort();
  };
  process.once("SIGINT", onSigint);
  let spinner: NodeJS.Timeout | undefined;
  let queuedText = "";
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
      { signal: abort.signal },
    )) {
      last = event;
      if (opts.json) {
        out.write(`${toJsonString(RunEventSchema, event)}\n`);
        continue;
      }
      if (event.event.case === "queued" && tty) {
        // On a terminal, waiting is one animated line, not a line per update.
        queuedText = `queued ${event.event.value.position}/${event.event.value.queueSize}`;
        let frame = 0;
        spinner ??= setInterval(() => {
          frame = (frame + 1) % SPINNER.length;
          out.write(`\r\x1b[2K${st.dim(`${SPINNER[frame]} ${queuedText}`)}`);
        }, 100);
        continue;
      }
      stopSpinner();
      const text = renderEvent(event, st);
      if (text !== null) out.write(`${text}\n`);
    }
  } catch (err) {
    stopSpinner();
    if (interrupted) return 130;
    const ce = ConnectError.from(err);
    process.stderr.write(`fermilink-runner: ${Code[ce.code]}: ${ce.rawMessage} (${opts.url})\n`);
    return 3;
  } finally {
    stopSpinner();
    process.off("SIGINT", onSigint);
  }
  if (interrupted) return 130;
  return last && exitSucceeded(last) ? 0 : 1;
}
