import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  type AgentItem,
  AgentItemSchema,
  ExitReason,
  ItemStatus,
  type RunEvent,
  RunEventSchema,
} from "../../../gen/fermilink/runner/v1/run_pb.js";
import {
  COLOR,
  exitSucceeded,
  PLAIN,
  renderEvent,
  TerminalRenderer,
} from "../../../src/cli/render.js";

type Kind = MessageInitShape<typeof AgentItemSchema>["kind"];
const item = (kind: Kind) => create(AgentItemSchema, { kind });
const agent = (items: AgentItem[], raw = "{}"): RunEvent =>
  create(RunEventSchema, { runId: "r", seq: 2n, event: { case: "agent", value: { raw, items } } });
const message = (text: string, delta = false) => item({ case: "message", value: { text, delta } });
const result = (text: string, success = true) => item({ case: "result", value: { text, success } });

describe("terminal rendering of one event", () => {
  it("shows commands with their output and exit code, messages as text, unread lines raw", () => {
    const cmd = item({
      case: "command",
      value: {
        id: "c1",
        command: "ls",
        output: "a\nb\n",
        exitCode: 0,
        status: ItemStatus.COMPLETED,
      },
    });
    expect(renderEvent(agent([cmd]), PLAIN)).toBe("$ ls (exit 0)\n    a\n    b");
    const started = item({
      case: "command",
      value: { id: "c1", command: "ls", status: ItemStatus.IN_PROGRESS },
    });
    expect(renderEvent(agent([started]), PLAIN)).toBe("$ ls");
    // Claude names the command only at its start; the end carries just the id.
    const ended = item({
      case: "command",
      value: { id: "c1", output: "x", exitCode: 2, status: ItemStatus.FAILED },
    });
    expect(renderEvent(agent([ended]), PLAIN)).toBe("  ↳ (exit 2)\n    x");
    expect(renderEvent(agent([message("done")]), PLAIN)).toBe("done");
    expect(renderEvent(agent([], "not json"), PLAIN)).toBe("not json");
  });

  it("shows file changes, tool calls, usage, reasoning and errors", () => {
    const files = item({
      case: "fileChange",
      value: {
        id: "f",
        changes: [
          { path: "a.txt", kind: "add" },
          { path: "b.txt", kind: "update" },
        ],
      },
    });
    expect(renderEvent(agent([files]), PLAIN)).toBe("add a.txt\nupdate b.txt");
    const toolStart = item({
      case: "toolCall",
      value: { id: "t", name: "search", inputJson: '{"q":"x"}', status: ItemStatus.IN_PROGRESS },
    });
    expect(renderEvent(agent([toolStart]), PLAIN)).toBe('→ search {"q":"x"}');
    const toolEnd = item({
      case: "toolCall",
      value: { id: "t", name: "search", output: "3 hits\n", status: ItemStatus.COMPLETED },
    });
    expect(renderEvent(agent([toolEnd]), PLAIN)).toBe("→ search\n    3 hits");
    const usage = item({
      case: "usage",
      value: { inputTokens: 120n, cachedInputTokens: 100n, outputTokens: 7n, costUsd: 0.0123 },
    });
    expect(renderEvent(agent([usage]), PLAIN)).toBe("tokens: 120 in (100 cached), 7 out, $0.0123");
    const cacheWrite = item({
      case: "usage",
      value: { inputTokens: 120n, cachedInputTokens: 100n, cacheWriteInputTokens: 20n },
    });
    expect(renderEvent(agent([cacheWrite]), PLAIN)).toBe(
      "tokens: 120 in (100 cached, 20 written to cache), 0 out",
    );
    const thinking = item({ case: "reasoning", value: { text: "hmm" } });
    expect(renderEvent(agent([thinking]), PLAIN)).toBe("(thinking) hmm");
    const error = item({ case: "error", value: { message: "quota", fatal: true } });
    expect(renderEvent(agent([error]), PLAIN)).toBe("error: quota");
    expect(renderEvent(agent([error]), COLOR)).toBe("\x1b[31merror: quota\x1b[0m");
  });

  it("shows queued, meta (with the package) and stderr lines, stderr dimmed", () => {
    const queued = create(RunEventSchema, {
      event: { case: "queued", value: { position: 3, queueSize: 10 } },
    });
    expect(renderEvent(queued, PLAIN)).toBe("queued 3/10");
    const meta = create(RunEventSchema, {
      runId: "r1",
      event: {
        case: "meta",
        value: {
          sessionId: "s1",
          agent: { provider: "claude", sandboxPolicy: "enforce" },
          package: { packageId: "meep" },
        },
      },
    });
    expect(renderEvent(meta, PLAIN)).toBe("run r1 · session s1 · claude, package meep");
    const log = create(RunEventSchema, {
      event: { case: "log", value: { text: "warning: x" } },
    });
    expect(renderEvent(log, COLOR)).toBe("\x1b[2mwarning: x\x1b[0m");
  });

  it("summarises the exit and says whether the run succeeded", () => {
    const exit = create(RunEventSchema, {
      runId: "r",
      seq: 9n,
      event: {
        case: "exit",
        value: {
          reason: ExitReason.TIMEOUT,
          returnCode: -15,
          signal: "SIGTERM",
          duration: { seconds: 3n, nanos: 0 },
          message: "too slow",
        },
      },
    });
    expect(renderEvent(exit, PLAIN)).toBe("✗ timeout, return code -15 (SIGTERM), 3.0 s — too slow");
    expect(exitSucceeded(exit)).toBe(false);
    const ok = create(RunEventSchema, {
      event: {
        case: "exit",
        value: {
          reason: ExitReason.COMPLETED,
          returnCode: 0,
          succeeded: true,
          duration: { seconds: 1n, nanos: 250_000_000 },
        },
      },
    });
    expect(renderEvent(ok, PLAIN)).toBe("✓ completed, return code 0, 1.3 s");
    expect(exitSucceeded(ok)).toBe(true);
    // Exit code 0 without the provider's successful final result is not a success.
    const noResult = create(RunEventSchema, {
      event: { case: "exit", value: { reason: ExitReason.COMPLETED, returnCode: 0 } },
    });
    expect(exitSucceeded(noResult)).toBe(false);
    // A reason this client does not know (a newer server): named by its number.
    const newer = create(RunEventSchema, {
      event: { case: "exit", value: { reason: 42 as ExitReason, returnCode: 1 } },
    });
    expect(renderEvent(newer, PLAIN)).toMatch(/^✗ reason 42, return code 1/);
  });
});

describe("terminal rendering of a stream", () => {
  const write = (events: RunEvent[]) => {
    const r = new TerminalRenderer(PLAIN);
    return events.map((e) => r.push(e)).join("") + r.end();
  };

  it("joins gemini's token deltas on one line and ends it before the next output", () => {
    const text = write([
      agent([message("Hel", true)]),
      agent([message("lo", true)]),
      agent([item({ case: "reasoning", value: { text: "next" } })]),
      agent([message("Bye", true)]),
    ]);
    expect(text).toBe("Hello\n(thinking) next\nBye\n");
  });

  it("does not print a result that repeats the last message or error", () => {
    // Claude's result line repeats the final message; a failing turn repeats its error.
    expect(write([agent([message("All done.")]), agent([result("All done.\n")])])).toBe(
      "All done.\n",
    );
    expect(
      write([agent([message("Hi", true), message(" there", true)]), agent([result("Hi there")])]),
    ).toBe("Hi there\n");
    const error = item({ case: "error", value: { message: "401 Unauthorized", fatal: true } });
    expect(write([agent([error, result("401 Unauthorized", false)])])).toBe(
      "error: 401 Unauthorized\n",
    );
    expect(write([agent([message("a")]), agent([result("a different summary")])])).toBe(
      "a\na different summary\n",
    );
  });

  it("renders the other events a line each and skips lines with nothing to show", () => {
    const log = create(RunEventSchema, { event: { case: "log", value: { text: "oops" } } });
    expect(write([agent([], "raw line"), log, agent([result("")])])).toBe("raw line\noops\n");
  });

  it("marks a line the runner cut at its line cap, stdout and stderr alike", () => {
    const cutOut = create(RunEventSchema, {
      event: { case: "agent", value: { raw: '{"type":"item.comp', items: [], truncated: true } },
    });
    const cutErr = create(RunEventSchema, {
      event: { case: "log", value: { text: "xxxx", truncated: true } },
    });
    const mark = " … [cut: longer than FERMILINK_RUNNER_MAX_LINE_BYTES]";
    expect(renderEvent(cutOut, PLAIN)).toBe(`{"type":"item.comp${mark}`);
    expect(renderEvent(cutErr, PLAIN)).toBe(`xxxx${mark}`);
    expect(renderEvent(cutErr, COLOR)).toBe(`\x1b[2mxxxx\x1b[0m\x1b[1m${mark}\x1b[0m`);
  });
});

describe("provider text on a terminal", () => {
  const onTerminal = (events: RunEvent[]) => {
    const r = new TerminalRenderer(COLOR);
    return events.map((e) => r.push(e)).join("") + r.end();
  };
  const hostile = "a\x1b]0;pwned\x07b\x1b[2Jc\rd\x9b31me\x7f";

  it("shows the control characters of model text, commands and raw lines, and keeps colours", () => {
    const out = onTerminal([
      agent([message(hostile)]),
      agent([
        item({
          case: "command",
          value: { id: "c", command: "x", output: hostile, status: ItemStatus.COMPLETED },
        }),
      ]),
      agent([], hostile),
      agent([message("\x1b[32mgreen\x1b[0m")]),
    ]);
    // Nothing that moves, clears, titles or rewrites is left: only SGR sequences survive.
    // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are the subject.
    const sequences = out.match(/\x1b[^m]*m|[\x00-\x08\x0b-\x1f\x7f-\x9f]/g) ?? [];
    // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are the subject.
    expect(sequences.every((s) => /^\x1b\[[0-9;]*m$/.test(s))).toBe(true);
    expect(out).toContain("a^[]0;pwned^Gb^[[2Jc^Md\\x9b31me^?");
    expect(out).toContain("\x1b[32mgreen\x1b[0m");
  });

  it("leaves the provider's bytes as they are when the output is not a terminal", () => {
    const r = new TerminalRenderer(PLAIN);
    expect(r.push(agent([message(hostile)]))).toBe(`${hostile}\n`);
  });
});
