import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { PackageService } from "../../gen/fermilink/runner/v1/packages_pb.js";
import {
  type RunEvent,
  type RunInfo,
  RunService,
  RunStatus,
} from "../../gen/fermilink/runner/v1/run_pb.js";
import { EventView, exitReasonName } from "./render.js";

// The page talks to the runner that served it, or to `?runner=<url>` (another origin needs
// FERMILINK_RUNNER_CORS_ORIGINS on that runner).
const runnerUrl =
  new URL(window.location.href).searchParams.get("runner") ?? window.location.origin;
const transport = createConnectTransport({ baseUrl: runnerUrl });
const runs = createClient(RunService, transport);
const packages = createClient(PackageService, transport);

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const form = $<HTMLFormElement>("run-form");
const promptInput = $<HTMLTextAreaElement>("prompt");
const sessionInput = $<HTMLInputElement>("session");
const userInput = $<HTMLInputElement>("user");
const packageSelect = $<HTMLSelectElement>("package");
const detachInput = $<HTMLInputElement>("detach");
const startButton = $<HTMLButtonElement>("start");
const cancelButton = $<HTMLButtonElement>("cancel");
const statusLine = $<HTMLParagraphElement>("status");
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

function setStatus(text: string): void {
  statusLine.textContent = text;
}

function describeError(err: unknown): string {
  const ce = ConnectError.from(err);
  return ce.code === Code.Canceled ? "Stopped watching." : `${Code[ce.code]}: ${ce.rawMessage}`;
}

/** Stop the watch on screen and take its place; returns the new watch's signal holder. */
function replaceWatch(): AbortController {
  watching?.abort();
  watching = new AbortController();
  return watching;
}

/** Stream a run (new or attached) into the view until its exit event or until we stop watching. */
async function watch(
  stream: AsyncIterable<RunEvent>,
  abort: AbortController,
  userId: string,
): Promise<void> {
  view.clear();
  current = null;
  runIdLabel.textContent = "";
  startButton.disabled = true;
  cancelButton.disabled = true;
  try {
    for await (const event of stream) {
      if (watching !== abort) return;
      if (!current || current.runId !== event.runId) {
        current = { runId: event.runId, userId };
        runIdLabel.textContent = event.runId;
        cancelButton.disabled = false;
        setStatus("Running…");
      }
      view.add(event);
      if (event.event.case === "exit")
        setStatus(`Ended: ${exitReasonName(event.event.value.reason)}`);
    }
  } catch (err) {
    if (watching === abort) setStatus(describeError(err));
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
    userId,
  );
});

cancelButton.addEventListener("click", () => {
  if (!current) return;
  const { runId, userId } = current;
  void runs.cancel({ runId, userId }).catch((err: unknown) => setStatus(describeError(err)));
});

function attach(run: RunInfo): void {
  const abort = replaceWatch();
  const userId = userInput.value.trim();
  setStatus(`Watching ${run.runId}…`);
  void watch(
    runs.attach({ runId: run.runId, afterSeq: 0n, userId }, { signal: abort.signal }),
    abort,
    userId,
  );
}

/** Listings asked for: only the latest is shown (an earlier one, maybe another user's, can answer last). */
let listings = 0;

async function refreshRuns(): Promise<void> {
  const listing = ++listings;
  try {
    const page = await runs.listRuns({ userId: userInput.value.trim(), pageSize: 20 });
    if (listing !== listings) return;
    runList.replaceChildren(
      ...page.runs.map((run) => {
        const li = document.createElement("li");
        li.dataset.runId = run.runId;
        const live = run.status === RunStatus.QUEUED || run.status === RunStatus.RUNNING;
        const state = live
          ? run.status === RunStatus.QUEUED
            ? "queued"
            : "running"
          : exitReasonName(run.exitReason);
        const when = run.createdAt
          ? new Date(Number(run.createdAt.seconds) * 1000).toLocaleTimeString()
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
        watchButton.addEventListener("click", () => attach(run));
        li.append(label, preview, watchButton);
        return li;
      }),
    );
  } catch (err) {
    if (listing === listings) setStatus(describeError(err));
  }
}

async function loadPackages(): Promise<void> {
  try {
    const list = await packages.listPackages({});
    for (const p of list.packages) {
      const opt = document.createElement("option");
      opt.value = p.id;
      opt.textContent = `${p.title}${p.active ? " (active)" : ""}${p.available ? "" : " — missing"}`;
      opt.disabled = !p.available;
      packageSelect.append(opt);
    }
  } catch (err) {
    setStatus(`Packages unavailable: ${describeError(err)}`);
  }
}

$<HTMLButtonElement>("refresh-runs").addEventListener("click", () => void refreshRuns());
userInput.addEventListener("change", () => void refreshRuns());
$<HTMLSpanElement>("connection").textContent = runnerUrl;
void loadPackages();
void refreshRuns();
