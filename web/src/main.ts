import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { PackageService } from "../../gen/fermilink/runner/v1/packages_pb.js";
import {
  type RunEvent,
  type RunInfo,
  RunService,
  RunStatus,
} from "../../gen/fermilink/runner/v1/run_pb.js";
import { EventView, exitReasonName } from "./render.js";

/**
 * The runner the page talks to: the one that served it, or `?runner=<url>` when that is this
 * page's origin or a runner on this machine (localhost or 127.0.0.1, any port: the app served
 * from another local port during development). Any other host is refused, not asked about: a
 * crafted link would otherwise send that host the user's prompts and user id. The CSP's
 * connect-src (src/transport/web-ui.ts) allows the same. Another origin needs
 * FERMILINK_RUNNER_CORS_ORIGINS on that runner.
 */
function chooseRunner(): { url: string; refused: string | null } {
  const own = window.location.origin;
  const asked = new URL(window.location.href).searchParams.get("runner");
  if (asked === null) return { url: own, refused: null };
  let target: URL;
  try {
    target = new URL(asked);
  } catch {
    return { url: own, refused: asked };
  }
  const local =
    (target.protocol === "http:" || target.protocol === "https:") &&
    (target.hostname === "localhost" || target.hostname === "127.0.0.1");
  if (target.origin !== own && !local) return { url: own, refused: asked };
  // Rebuilt from the parsed parts: method paths are appended to it, and a query or fragment
  // left in it would swallow them.
  return { url: `${target.origin}${target.pathname.replace(/\/+$/, "")}`, refused: null };
}

const { url: runnerUrl, refused: refusedRunner } = chooseRunner();

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const tokenInput = $<HTMLInputElement>("token");
/**
 * The token is kept for this tab only (sessionStorage, not localStorage: it goes when the tab
 * closes, and other tabs never see it), and per runner: `?runner=` may point the same page at
 * another runner, which must not be sent this one's token.
 */
const TOKEN_KEY = `fermilink-runner.token ${runnerUrl}`;
tokenInput.value = sessionStorage.getItem(TOKEN_KEY) ?? "";
/**
 * Marks the error for a token that fetch cannot send: header values are Latin-1, and fetch
 * refuses anything beyond with an error that says nothing of the token. (A cause, not a
 * subclass: ConnectError's `instanceof` matches any ConnectError.)
 */
const TOKEN_NOT_SENDABLE = new Error("token not sendable");
const tokenNotSendable = () =>
  new ConnectError(
    "The token in the Token field has characters an HTTP header cannot carry (only Latin-1 ones can be sent): check that it was copied whole, without typographic quotes or dashes",
    Code.InvalidArgument,
    undefined,
    undefined,
    TOKEN_NOT_SENDABLE,
  );
/** Read at each call, so a token typed after the page loaded is sent by the next call. */
const bearer: Interceptor = (next) => (req) => {
  const token = tokenInput.value.trim();
  if (/[\u0100-\u{10ffff}]/u.test(token)) throw tokenNotSendable();
  if (token !== "") req.header.set("Authorization", `Bearer ${token}`);
  return next(req);
};
const transport = createConnectTransport({ baseUrl: runnerUrl, interceptors: [bearer] });
const runs = createClient(RunService, transport);
const packages = createClient(PackageService, transport);

const form = $<HTMLFormElement>("run-form");
const promptInput = $<HTMLTextAreaElement>("prompt");
const sessionInput = $<HTMLInputElement>("session");
const userInput = $<HTMLInputElement>("user");
const packageSelect = $<HTMLSelectElement>("package");
const detachInput = $<HTMLInputElement>("detach");
const startButton = $<HTMLButtonElement>("start");
const cancelButton = $<HTMLButtonElement>("cancel");
const statusLine = $<HTMLParagraphElement>("status");
const reattachButton = $<HTMLButtonElement>("reattach");
const runsStatus = $<HTMLParagraphElement>("runs-status");
const packagesStatus = $<HTMLParagraphElement>("packages-status");
const packagesRetry = $<HTMLButtonElement>("packages-retry");
const runIdLabel = $<HTMLSpanElement>("run-id");
const runList = $<HTMLUListElement>("runs");
const view = new EventView($<HTMLDivElement>("events"));

/**
 * The run on screen, once its first event named it, with the user it was
 * started or attached as: Cancel names that user, not whatever the User field
 * says by then (another user is told the run does not exist).
 */
let current: { runId: string; userId: string } | null = null;
/**
 * The watch on screen, from the moment it starts: a new one stops it even
 * before its first event, and a watch that was replaced ends without touching
 * the page (its buttons, status and run belong to the new one).
 */
let watching: AbortController | null = null;
/** A run whose stream ended before its exit event: Re-attach continues after the events shown. */
let resumable: { runId: string; userId: string; afterSeq: bigint; replay: boolean } | null = null;

function setStatus(text: string): void {
  statusLine.textContent = text;
}

function describeError(err: unknown): string {
  const ce = ConnectError.from(err);
  if (ce.code === Code.Canceled) return "Stopped watching.";
  if (ce.cause === TOKEN_NOT_SENDABLE) return ce.rawMessage;
  // A runner with auth on refuses every call without a good token: say what to fix, where.
  if (ce.code === Code.Unauthenticated)
    return `The runner needs a token: ${ce.rawMessage} (enter it in the Token field)`;
  if (ce.code === Code.PermissionDenied) return `The token does not allow this: ${ce.rawMessage}`;
  return `${Code[ce.code]}: ${ce.rawMessage}`;
}

/** Stop the watch on screen and take its place; returns the new watch's signal holder. */
function replaceWatch(): AbortController {
  watching?.abort();
  resumable = null;
  reattachButton.hidden = true;
  watching = new AbortController();
  return watching;
}

interface WatchOptions {
  /** The user the run is started or attached as (Cancel and Re-attach name it). */
  userId: string;
  /** Whether the run goes on when this stream ends early: detached, or watched through Attach. */
  outlivesStream: boolean;
  /** Resuming a dropped watch: the view keeps what it shows and the stream starts after it. */
  resume?: { runId: string; afterSeq: bigint };
  /**
   * Replaying a finished run: its events come from the journal at once, so its queued and
   * started moments are history, and the status says "Replaying" until its exit.
   */
  replay?: boolean;
}

/** Stream a run (new or attached) into the view until its exit event or until we stop watching. */
async function watch(
  stream: AsyncIterable<RunEvent>,
  abort: AbortController,
  { userId, outlivesStream, resume, replay = false }: WatchOptions,
): Promise<void> {
  if (!resume) view.clear();
  current = null;
  runIdLabel.textContent = "";
  startButton.disabled = true;
  cancelButton.disabled = true;
  let lastSeq = resume?.afterSeq ?? 0n;
  // A resumed watch that fails before its first event can still be retried.
  const known = resume ? { runId: resume.runId, userId } : null;
  let exited = false;
  /** What the status line says of a live run: still waiting for its turn, or started. */
  let shown: "queued" | "running" | null = null;
  try {
    for await (const event of stream) {
      if (watching !== abort) return;
      if (!current || current.runId !== event.runId) {
        current = { runId: event.runId, userId };
        runIdLabel.textContent = event.runId;
        // A finished run cannot be cancelled.
        cancelButton.disabled = replay;
      }
      if (event.seq > lastSeq) lastSeq = event.seq;
      view.add(event);
      const e = event.event;
      if (e.case === "exit") {
        exited = true;
        setStatus(`Ended: ${exitReasonName(e.value.reason)}`);
      } else if (replay) {
        // The status set when the replay began stays until the exit.
      } else if (e.case === "queued") {
        shown = "queued";
        setStatus(`Queued: ${e.value.position} of ${e.value.queueSize} in line…`);
      } else if (shown !== "running") {
        // Every queued event comes before meta; a resumed watch may start after meta.
        shown = "running";
        setStatus("Running…");
      }
    }
    if (watching === abort && !exited)
      endedEarly(undefined, current ?? known, lastSeq, { outlivesStream, replay });
  } catch (err) {
    // An error after the exit event changes nothing about the run: its result stays on screen.
    if (watching === abort && !exited)
      endedEarly(err, current ?? known, lastSeq, { outlivesStream, replay });
  } finally {
    if (watching === abort) {
      watching = null;
      startButton.disabled = false;
      cancelButton.disabled = true;
      current = null;
      void refreshRuns();
    }
  }
}

/**
 * The watch on screen ended without the run's exit event (connection lost, runner gone): say so
 * rather than leave "Running…", and offer to re-attach when the run is known. Attach works for
 * live and finished runs alike, so it either follows the run on or shows how it ended.
 */
function endedEarly(
  err: unknown,
  run: { runId: string; userId: string } | null,
  lastSeq: bigint,
  { outlivesStream, replay }: { outlivesStream: boolean; replay: boolean },
): void {
  if (!run) {
    setStatus(err === undefined ? "The stream ended before the run started." : describeError(err));
    return;
  }
  const why = err === undefined ? "" : ` (${describeError(err)})`;
  setStatus(
    `The stream ended without the run's result${why}. ${
      replay
        ? "The run had ended: Re-attach replays the rest."
        : outlivesStream
          ? "The run goes on: Re-attach follows it."
          : "Without detach the run ends when its caller is gone: Re-attach shows how it ended."
    }`,
  );
  resumable = { runId: run.runId, userId: run.userId, afterSeq: lastSeq, replay };
  reattachButton.hidden = false;
}

form.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const abort = replaceWatch();
  const userId = userInput.value.trim();
  setStatus("Starting…");
  void watch(
    runs.run(
      {
        userPrompt: promptInput.value,
        sessionId: sessionInput.value.trim(),
        userId,
        packageId: packageSelect.value,
        detach: detachInput.checked,
      },
      { signal: abort.signal },
    ),
    abort,
    { userId, outlivesStream: detachInput.checked },
  );
});

cancelButton.addEventListener("click", () => {
  if (!current) return;
  const { runId, userId } = current;
  void runs.cancel({ runId, userId }).catch((err: unknown) => setStatus(describeError(err)));
});

/** Watch a listed run as the user it was listed for (the field may say another by the click). */
function attach(run: RunInfo, userId: string): void {
  const abort = replaceWatch();
  const replay = !isLive(run);
  setStatus(replay ? `Replaying ${run.runId}…` : `Watching ${run.runId}…`);
  void watch(
    runs.attach({ runId: run.runId, afterSeq: 0n, userId }, { signal: abort.signal }),
    abort,
    { userId, outlivesStream: true, replay },
  );
}

function isLive(run: RunInfo): boolean {
  return run.status === RunStatus.QUEUED || run.status === RunStatus.RUNNING;
}

reattachButton.addEventListener("click", () => {
  if (!resumable) return;
  const { runId, userId, afterSeq, replay } = resumable;
  const abort = replaceWatch();
  setStatus(replay ? `Replaying ${runId}…` : `Re-attaching to ${runId}…`);
  void watch(runs.attach({ runId, afterSeq, userId }, { signal: abort.signal }), abort, {
    userId,
    outlivesStream: true,
    resume: { runId, afterSeq },
    replay,
  });
});

/** Listings asked for: only the latest is shown (an earlier one, maybe another user's, can answer last). */
let listings = 0;

async function refreshRuns(): Promise<void> {
  const listing = ++listings;
  const userId = userInput.value.trim();
  try {
    const page = await runs.listRuns({ userId, pageSize: 20 });
    if (listing !== listings) return;
    runsStatus.textContent = "";
    runList.replaceChildren(
      ...page.runs.map((run) => {
        const li = document.createElement("li");
        li.dataset.runId = run.runId;
        const live = isLive(run);
        const state = live
          ? run.status === RunStatus.QUEUED
            ? "queued"
            : "running"
          : exitReasonName(run.exitReason);
        const when = run.createdAt
          ? new Date(Number(run.createdAt.seconds) * 1000).toLocaleString()
          : "";
        const label = document.createElement("span");
        label.textContent = `${when} · ${run.sessionId} · ${state}`;
        const preview = document.createElement("span");
        preview.className = "preview";
        preview.textContent = run.promptPreview;
        const watchButton = document.createElement("button");
        watchButton.type = "button";
        watchButton.className = "secondary";
        watchButton.textContent = live ? "Attach" : "Replay";
        watchButton.addEventListener("click", () => attach(run, userId));
        li.append(label, preview, watchButton);
        return li;
      }),
    );
  } catch (err) {
    // Shown by the list, not in the status line: that holds the watched run's outcome.
    if (listing === listings)
      runsStatus.textContent = `Run list unavailable: ${describeError(err)}`;
  }
}

/** Package listings asked for: only the latest is shown (an earlier one may answer last). */
let packageLoads = 0;
/** The last listing failed: the next one is asked for by Retry or when the field is opened. */
let packagesFailed = false;

async function loadPackages(): Promise<void> {
  const load = ++packageLoads;
  try {
    const list = await packages.listPackages({});
    if (load !== packageLoads) return;
    packagesFailed = false;
    packagesRetry.hidden = true;
    // Loaded again when the token changes: the first option is the field's own, and the choice stays.
    const chosen = packageSelect.value;
    packageSelect.replaceChildren(packageSelect.options[0] as HTMLOptionElement);
    packagesStatus.textContent = "";
    for (const p of list.packages) {
      const opt = document.createElement("option");
      opt.value = p.id;
      opt.textContent = `${p.title}${p.active ? " (active)" : ""}${p.available ? "" : " — missing"}`;
      opt.disabled = !p.available;
      packageSelect.append(opt);
    }
    packageSelect.value = chosen;
    if (packageSelect.value !== chosen) packageSelect.value = "";
  } catch (err) {
    if (load !== packageLoads) return;
    // Shown by the package field, not in the status line: it may answer after a run has begun.
    packagesStatus.textContent = `Packages unavailable: ${describeError(err)}`;
    packagesFailed = true;
    packagesRetry.hidden = false;
  }
}

$<HTMLButtonElement>("refresh-runs").addEventListener("click", () => void refreshRuns());
packagesRetry.addEventListener("click", () => void loadPackages());
// Someone about to choose a package wants the list: a failed one is asked for again.
packageSelect.addEventListener("focus", () => {
  if (packagesFailed) void loadPackages();
});
userInput.addEventListener("change", () => void refreshRuns());
// Kept as typed, so a reload straight after typing keeps it too.
tokenInput.addEventListener("input", () => {
  const token = tokenInput.value.trim();
  if (token === "") sessionStorage.removeItem(TOKEN_KEY);
  else sessionStorage.setItem(TOKEN_KEY, token);
});
// What a missing token refused may be allowed now (and the reverse).
tokenInput.addEventListener("change", () => {
  void loadPackages();
  void refreshRuns();
});
$<HTMLSpanElement>("connection").textContent = runnerUrl;
if (refusedRunner !== null)
  setStatus(
    `Ignored ?runner=${refusedRunner}: this app talks only to the runner that served it or one on localhost.`,
  );
void loadPackages();
void refreshRuns();
