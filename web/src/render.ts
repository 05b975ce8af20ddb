import {
  type AgentItem,
  ExitReason,
  ItemStatus,
  type RunEvent,
} from "../../gen/fermilink/runner/v1/run_pb.js";

const EXIT_NAMES: Record<ExitReason, string> = {
  [ExitReason.UNSPECIFIED]: "unknown",
  [ExitReason.COMPLETED]: "completed",
  [ExitReason.TIMEOUT]: "timeout",
  [ExitReason.CANCELLED]: "cancelled",
  [ExitReason.CLIENT_GONE]: "client_gone",
  [ExitReason.SHUTDOWN]: "shutdown",
  [ExitReason.ERROR]: "error",
  [ExitReason.INTERRUPTED]: "interrupted",
  [ExitReason.RETRIES_EXHAUSTED]: "model calls kept failing",
};

export function exitReasonName(r: ExitReason): string {
  return EXIT_NAMES[r] ?? "unknown";
}

function el(cls: string, text = ""): HTMLDivElement {
  const div = document.createElement("div");
  div.className = `ev ${cls}`;
  div.textContent = text;
  return div;
}

const STATUS_TEXT: Partial<Record<ItemStatus, string>> = {
  [ItemStatus.IN_PROGRESS]: "running",
  [ItemStatus.COMPLETED]: "done",
  [ItemStatus.FAILED]: "failed",
  [ItemStatus.DECLINED]: "declined",
};

/**
 * The most event elements kept on screen: a run can stream without end (a
 * flood of provider lines), and every element kept costs memory and layout.
 * The oldest go first; a note at the top counts them.
 */
export const MAX_SHOWN_EVENTS = 2000;

/**
 * Renders a run's events into a container, readably: assistant text (deltas
 * appended), commands with their output and exit code (updated in place as
 * the provider reports progress), file changes, tool calls, usage, errors,
 * stderr lines and the exit. An agent line with no typed reading is shown raw.
 */
export class EventView {
  private readonly byItemId = new Map<string, HTMLElement>();
  private lastMessage: HTMLElement | null = null;
  /** The last assistant message (with its deltas) or error, to recognise a result repeating it. */
  private lastText = "";
  /** The item id each upserted element stands for, to forget it when it is dropped. */
  private readonly keyOf = new WeakMap<Element, string>();
  private readonly dropped = el("ev-dropped");
  private droppedCount = 0;
  /**
   * Whether the view follows new events. Kept from scroll events rather than
   * measured on every append: measuring after each append forces a layout
   * per event, which a fast stream turns into a frozen page.
   */
  private follow = true;
  /** The scrollTop the view last scrolled itself to: a scroll event at or past it is not the user's. */
  private autoTop = 0;
  private scrollQueued = false;

  constructor(private readonly root: HTMLElement) {
    root.addEventListener(
      "scroll",
      () => {
        const atBottom = root.scrollTop + root.clientHeight >= root.scrollHeight - 4;
        this.follow = atBottom || root.scrollTop >= this.autoTop - 4;
      },
      { passive: true },
    );
  }

  clear(): void {
    this.root.replaceChildren();
    this.byItemId.clear();
    this.lastMessage = null;
    this.lastText = "";
    this.droppedCount = 0;
    this.follow = true;
    this.autoTop = 0;
  }

  add(event: RunEvent): void {
    const e = event.event;
    switch (e.case) {
      case "queued":
        this.upsert(
          "queued",
          "ev-queued",
          `Waiting for a slot: ${e.value.position} of ${e.value.queueSize} in the queue`,
        );
        return;
      case "meta": {
        const m = e.value;
        const pkg = m.package
          ? `, package ${m.package.packageId} (${m.package.linkedCount} entries linked)`
          : "";
        this.append(
          el(
            "ev-meta",
            `Session ${m.sessionId} · ${m.agent?.provider ?? "?"} (${m.agent?.sandboxMode ?? m.agent?.sandboxPolicy ?? ""})${pkg}`,
          ),
        );
        return;
      }
      case "agent":
        if (e.value.items.length === 0) {
          this.append(el("ev-log", e.value.raw));
          return;
        }
        for (const item of e.value.items) this.addItem(item);
        return;
      case "log":
        this.append(el("ev-log", e.value.text));
        return;
      case "exit": {
        const x = e.value;
        const secs = x.duration ? Number(x.duration.seconds) + x.duration.nanos / 1e9 : 0;
        const code = x.returnCode === undefined ? "no return code" : `return code ${x.returnCode}`;
        const div = el(
          "ev-exit",
          `Run ended: ${exitReasonName(x.reason)} (${code}) after ${secs.toFixed(1)} s${x.message ? ` — ${x.message}` : ""}`,
        );
        div.dataset.reason = exitReasonName(x.reason);
        div.dataset.ok = String(x.succeeded);
        this.append(div);
        return;
      }
      case undefined:
        return;
    }
  }

  private addItem(item: AgentItem): void {
    const k = item.kind;
    switch (k.case) {
      case "message": {
        if (k.value.delta && this.lastMessage) {
          this.lastMessage.textContent += k.value.text;
          this.lastText += k.value.text;
          return;
        }
        this.lastMessage = el("ev-message", k.value.text);
        this.append(this.lastMessage);
        this.lastText = k.value.text;
        return;
      }
      case "reasoning":
        this.append(el("ev-reasoning", k.value.text));
        return;
      case "command": {
        const c = k.value;
        const div = this.upsert(`cmd:${c.id}`, "ev-command", "");
        // Some providers report the command only when it starts (the result line has just the id).
        if (c.command) div.dataset.command = c.command;
        const status = STATUS_TEXT[c.status] ?? "";
        const exit = c.exitCode === undefined ? "" : ` · exit ${c.exitCode}`;
        const head = document.createElement("div");
        head.textContent = `$ ${div.dataset.command ?? ""}   [${status}${exit}]`;
        const out = document.createElement("div");
        out.className = "output";
        out.textContent = c.output;
        div.replaceChildren(head, ...(c.output ? [out] : []));
        return;
      }
      case "fileChange": {
        const f = k.value;
        const text = f.changes.map((ch) => `${ch.kind} ${ch.path}`).join("\n");
        this.upsert(`file:${f.id}`, "ev-file", `Files changed:\n${text}`);
        return;
      }
      case "toolCall": {
        const t = k.value;
        const status = STATUS_TEXT[t.status] ?? "";
        this.upsert(
          `tool:${t.id}`,
          "ev-tool",
          `Tool ${t.name} ${t.inputJson} [${status}]${t.output ? `\n${t.output}` : ""}`,
        );
        return;
      }
      case "usage": {
        const u = k.value;
        const cost = u.costUsd === undefined ? "" : ` · $${u.costUsd.toFixed(4)}`;
        this.append(el("ev-usage", `Tokens: ${u.inputTokens} in, ${u.outputTokens} out${cost}`));
        return;
      }
      case "error":
        this.append(el("ev-error", `Error: ${k.value.message}`));
        this.lastText = k.value.message;
        return;
      case "result":
        // claude, gemini and codex repeat the last message (or error) as the turn's result.
        if (k.value.text && k.value.text.trim() !== this.lastText.trim()) {
          this.append(el("ev-message", k.value.text));
        }
        return;
      case undefined:
        return;
    }
  }

  /** One element per provider item id, updated as the item progresses. */
  private upsert(key: string, cls: string, text: string): HTMLElement {
    let div = this.byItemId.get(key);
    if (!div) {
      div = el(cls);
      this.byItemId.set(key, div);
      this.keyOf.set(div, key);
      this.append(div);
    }
    div.textContent = text;
    this.scrollSoon();
    return div;
  }

  private append(node: HTMLElement): void {
    if (!node.classList.contains("ev-message")) this.lastMessage = null;
    this.root.append(node);
    if (this.root.childElementCount - (this.droppedCount > 0 ? 1 : 0) > MAX_SHOWN_EVENTS)
      this.dropOldest();
    this.scrollSoon();
  }

  private dropOldest(): void {
    const oldest =
      this.droppedCount > 0 ? this.dropped.nextElementSibling : this.root.firstElementChild;
    if (!oldest) return;
    oldest.remove();
    const key = this.keyOf.get(oldest);
    if (key !== undefined) this.byItemId.delete(key);
    if (oldest === this.lastMessage) this.lastMessage = null;
    this.droppedCount++;
    this.dropped.textContent = `${this.droppedCount} earlier events not shown`;
    if (this.droppedCount === 1) this.root.prepend(this.dropped);
  }

  /** Scroll to the newest event once per frame, if the user has not scrolled away. */
  private scrollSoon(): void {
    if (!this.follow || this.scrollQueued) return;
    this.scrollQueued = true;
    requestAnimationFrame(() => {
      this.scrollQueued = false;
      if (!this.follow) return;
      this.root.scrollTop = this.root.scrollHeight;
      this.autoTop = this.root.scrollTop;
    });
  }
}
