import { existsSync } from "node:fs";
import { lstat, readdir, readFile, readlink, writeFile } from "node:fs/promises";
import http2 from "node:http2";
import net from "node:net";
import path from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it, vi } from "vitest";
import { RunService } from "../../gen/fermilink/runner/v1/run_pb.js";
import { BUILTIN_TEMPLATE_DIR } from "../../src/workspace/agents-file.js";
import { collect } from "../helpers/collect.js";
import { h2Upload } from "../helpers/h2-upload.js";
import { expectContinue, rawRequest } from "../helpers/raw-http.js";
import { parseLikeFermiLink, postRun } from "../helpers/sse-client.js";
import { FAKE_AGENT, startTestServer, type TestServer } from "../helpers/start-server.js";
import { streamedEvents } from "../helpers/streamed-events.js";

let server: TestServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

async function invocation(
  s: TestServer,
  sessionId: string,
): Promise<{ argv: string[]; stdin: string; env: Record<string, string> }> {
  const file = path.join(s.workspacesRoot, sessionId, "repo", ".fake-agent", "invocation.json");
  return JSON.parse(await readFile(file, "utf8"));
}

describe("POST /run (FermiLink SSE face)", () => {
  it("takes the user id from the header when ?user_id= is blank", async () => {
    server = await startTestServer();
    const run = await postRun(server.baseUrl, { user_prompt: "x", user_id: "ann" });
    const runId = JSON.parse(run.events[0]?.data ?? "{}").run_id;
    const get = (query: string, user?: string) =>
      fetch(`${(server as TestServer).baseUrl}/runs/${runId}${query}`, {
        headers: user ? { "x-fermilink-user-id": user } : {},
      }).then((r) => r.status);
    expect(await get("?user_id=", "ann")).toBe(200);
    expect(await get("?user_id=%20", "Ann")).toBe(200);
    expect(await get("?user_id=bob", "ann")).toBe(404);
    expect(await get("?user_id=")).toBe(404);
    // A repeated header counts once, by its first value (as Starlette reads headers).
    const repeated = (...users: string[]) =>
      rawRequest(
        (server as TestServer).app.port,
        "GET",
        `/runs/${runId}`,
        users.map((u): [string, string] => ["X-Fermilink-User-Id", u]),
      ).then((r) => r.status);
    expect(await repeated("ann", "ann")).toBe(200);
    expect(await repeated("bob", "ann")).toBe(404);
  });

  it("reads the body as JSON only without a Content-Type or with a JSON one, as FastAPI does", async () => {
    server = await startTestServer();
    const post = (type: string | null) =>
      fetch(`${(server as TestServer).baseUrl}/run`, {
        method: "POST",
        // A string body makes fetch send text/plain unless told otherwise.
        headers: type === null ? {} : { "content-type": type },
        body:
          type === null
            ? new Blob([JSON.stringify({ user_prompt: "x" })])
            : JSON.stringify({ user_prompt: "#scenario=bench-one-line" }),
      });
    // What a web page can send to any origin without asking: a text or a form body; and a
    // type with two slashes, which Python's email.message takes for text/plain.
    for (const type of [
      "text/plain;charset=UTF-8",
      "application/x-www-form-urlencoded",
      "application/x/+json",
    ]) {
      const res = await post(type);
      expect(res.status).toBe(422);
      expect(await res.json()).toMatchObject({
        detail: [
          {
            type: "model_attributes_type",
            loc: ["body"],
            msg: "Input should be a valid dictionary or object to extract fields from",
          },
        ],
      });
    }
    expect(server.app.pipeline.liveRuns).toBe(0);
    for (const type of [null, "application/json", "Application/Problem+JSON; charset=utf-8"]) {
      const res = await post(type);
      expect(res.status).toBe(200);
      await res.text();
    }
    // An empty Content-Type is none to FastAPI (`if not content_type_value`): the body is JSON.
    const empty = await rawRequest(
      server.app.port,
      "POST",
      "/run",
      [["Content-Type", ""]],
      JSON.stringify({ user_prompt: "#scenario=bench-one-line" }),
    );
    expect(empty.status).toBe(200);
  });

  it("streams meta, agent, log and runner.exit in order with FermiLink's headers and shapes", async () => {
    server = await startTestServer();
    const res = await postRun(server.baseUrl, {
      session_id: "s1",
      user_prompt: "hello world",
      user_id: "Alice",
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/event-stream; charset=utf-8");
    expect(res.headers.get("cache-control")).toBe("no-cache");
    expect(res.headers.get("x-accel-buffering")).toBe("no");

    const names = res.events.map((e) => e.event);
    expect(names[0]).toBe("meta");
    expect(names.at(-1)).toBe("runner.exit");
    expect(names.filter((n) => n === "runner.exit")).toHaveLength(1);
    expect(names).toContain("agent");
    expect(names).toContain("log");
    // Every frame carries its journal position, 1..n without gaps.
    expect(res.events.map((e) => e.id)).toEqual(res.events.map((_, i) => String(i + 1)));

    const meta = JSON.parse(res.events[0]?.data ?? "{}");
    expect(meta.session_id).toBe("s1");
    expect(meta.agent).toEqual({
      provider: "codex",
      sandbox_policy: "enforce",
      sandbox_mode: "workspace-write",
      model: null,
      reasoning_effort: null,
    });
    expect(meta).not.toHaveProperty("package");
    expect(meta.run_id).toMatch(/^[0-9a-f-]{36}$/);

    const agentLines = res.events.filter((e) => e.event === "agent").map((e) => JSON.parse(e.data));
    expect(
      agentLines.some(
        (l) => l.item?.type === "agent_message" && l.item.text.includes("hello world"),
      ),
    ).toBe(true);
    // An agent frame is the provider's stdout line as printed, not re-encoded.
    expect(res.events.find((e) => e.event === "agent")?.data).toBe(
      '{"type":"thread.started","thread_id":"thread_fake"}',
    );
    // The stderr line, as json.dumps({"text": line}) writes it (", " / ": " separators).
    const logs = res.events.filter((e) => e.event === "log").map((e) => e.data);
    expect(logs).toEqual(['{"text": "fake-agent: starting"}']);

    const exit = JSON.parse(res.events.at(-1)?.data ?? "{}");
    expect(exit.reason).toBe("completed");
    expect(exit.return_code).toBe(0);

    const repo = path.join(server.workspacesRoot, "s1", "repo");
    expect(await readFile(path.join(repo, "projects", "memory.md"), "utf8")).toContain(
      "hello world",
    );
    expect(existsSync(path.join(repo, "outputs"))).toBe(true);
    expect(existsSync(path.join(repo, ".git", "HEAD"))).toBe(true);
    // FERMILINK_SOFTWARE_ROOT names a missing directory here: the built-in template is used
    // (FermiLink's test_resolve_source_dir_prefers_packaged_software).
    expect(await readFile(path.join(repo, "AGENTS.md"), "utf8")).toBe(
      await readFile(path.join(BUILTIN_TEMPLATE_DIR, "AGENTS.md"), "utf8"),
    );

    const inv = await invocation(server, "s1");
    expect(inv.argv.at(-1)).toBe("hello world");
    expect(inv.argv.slice(0, 4)).toEqual(["exec", "--json", "--cd", repo]);
    expect(inv.stdin).toBe("devnull");
  });

  // FermiLink's tests/test_web_runner_integration.py (spec §9), read with its web client's parser:
  // the frames' `id:` lines and keepalive comments must not change what that client sees.
  it("reads as FermiLink's own web client reads it, a 70,000-character line included", async () => {
    server = await startTestServer({ FERMILINK_RUNNER_SSE_HEARTBEAT_SECONDS: "0.05" });
    const read = async (body: unknown) => {
      const res = await fetch(`${(server as TestServer).baseUrl}/run`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      expect(res.status).toBe(200);
      raw = await res.text();
      return parseLikeFermiLink(raw);
    };
    let raw = "";
    const events = await read({ session_id: "web", user_prompt: "#scenario=sleep-1s" });
    // What the parser had to skip: frame ids and keepalive comments during the quiet second.
    expect(raw).toContain("\nid: 2\n");
    expect(raw).toContain("\n: keepalive\n");
    expect(events[0]?.event).toBe("meta");
    expect(JSON.parse(events[0]?.data ?? "{}").session_id).toBe("web");
    expect(events.map((e) => e.event).filter((e) => e !== "agent" && e !== "log")).toEqual([
      "meta",
      "runner.exit",
    ]);
    expect(JSON.parse(events.at(-1)?.data ?? "{}")).toMatchObject({
      reason: "completed",
      return_code: 0,
    });

    const plain = await read({ session_id: "web", user_prompt: "runner prompt" });
    const item = (e: { data: string }) => JSON.parse(e.data).item ?? {};
    expect(plain.some((e) => e.event === "agent" && item(e).type === "agent_message")).toBe(true);
    expect(plain.filter((e) => e.event === "log").map((e) => JSON.parse(e.data))).toEqual([
      { text: "fake-agent: starting" },
    ]);
    expect(
      await readFile(
        path.join(server.workspacesRoot, "web", "repo", "projects", "memory.md"),
        "utf8",
      ),
    ).toContain("#scenario=sleep-1s");

    const huge = await read({ user_prompt: "#scenario=huge-line" });
    expect(huge.some((e) => e.event === "agent" && item(e).text?.length === 70_000)).toBe(true);
    expect(JSON.parse(huge.at(-1)?.data ?? "{}").reason).toBe("completed");
  });

  it("generates a session id when none is given", async () => {
    server = await startTestServer();
    const res = await postRun(server.baseUrl, { user_prompt: "hi" });
    const meta = JSON.parse(res.events[0]?.data ?? "{}");
    expect(meta.session_id).toMatch(/^[0-9a-f]{32}$/);
    expect(existsSync(path.join(server.workspacesRoot, meta.session_id, "repo"))).toBe(true);
  });

  it("passes a non-zero return code through with reason completed", async () => {
    server = await startTestServer();
    const res = await postRun(server.baseUrl, { user_prompt: "#scenario=stderr-and-exit-3" });
    const exit = JSON.parse(res.events.at(-1)?.data ?? "{}");
    expect(exit).toMatchObject({ reason: "completed", return_code: 3 });
  });

  it("delivers a 70,000-character line intact, invalid UTF-8 as U+FFFD, and a bare CR without forging a frame", async () => {
    server = await startTestServer();
    const huge = await postRun(server.baseUrl, { user_prompt: "#scenario=huge-line" });
    const big = huge.events.filter((e) => e.event === "agent").map((e) => JSON.parse(e.data));
    expect(big.some((l) => l.item?.text?.length === 70_000)).toBe(true);
    expect(JSON.parse(huge.events.at(-1)?.data ?? "{}").reason).toBe("completed");

    const bad = await postRun(server.baseUrl, { user_prompt: "#scenario=bad-utf8" });
    expect(bad.events.some((e) => e.event === "agent" && e.data.includes("\uFFFD"))).toBe(true);

    const cr = await postRun(server.baseUrl, { user_prompt: "#scenario=bare-cr" });
    const names = cr.events.map((e) => e.event);
    expect(
      names.filter((n) => n !== "agent" && n !== "log" && n !== "meta" && n !== "runner.exit"),
    ).toEqual([]);
    expect(names.at(-1)).toBe("runner.exit");
    expect(cr.events.some((e) => e.event === "agent" && e.data.includes("event: forged"))).toBe(
      true,
    );
  });

  it("answers every bad input with FermiLink's status and creates nothing outside the workspace root", async () => {
    server = await startTestServer();
    const base = server.baseUrl;
    const cases: [unknown, number, string?][] = [
      [{ user_prompt: "x".repeat(10_001) }, 413],
      [{ user_prompt: "" }, 422],
      [{}, 422],
      [{ user_prompt: 5 }, 422],
      [{ user_prompt: "hi", session_id: 7 }, 422],
      [{ user_prompt: "hi", session_id: "../escape" }, 422],
      [{ user_prompt: "hi", session_id: "/etc" }, 422],
      [{ user_prompt: "hi", session_id: ".." }, 422],
      [{ user_prompt: "hi", session_id: "a/b" }, 422],
      [{ user_prompt: "hi", sandbox: "yolo" }, 422],
      [{ user_prompt: "hi", sandbox: "danger-full-access" }, 422],
      [{ user_prompt: "hi", provider: "claude" }, 422],
      [{ user_prompt: "hi", provider: "cursor" }, 501],
      [[1, 2], 422],
      [{ user_prompt: "hi", package_id: "no-such-package" }, 400],
      [{ user_prompt: "hi", package_id: " -- " }, 400],
    ];
    for (const [body, status] of cases) {
      const res = await postRun(base, body);
      expect({ body, status: res.status }).toEqual({ body, status });
      const parsed = JSON.parse(res.text);
      expect(parsed).toHaveProperty("detail");
    }
    const tooLong = await postRun(base, { user_prompt: "x".repeat(10_001) });
    expect(JSON.parse(tooLong.text).detail).toBe("Prompt too long.");
    const pkg = await postRun(base, { user_prompt: "hi", package_id: " No Such Package " });
    expect(JSON.parse(pkg.text).detail).toBe("Requested package not found: no-such-package");
    // A huge value is quoted in part, not sent back whole.
    const sandbox = await postRun(base, { user_prompt: "hi", sandbox: "s".repeat(500_000) });
    expect([sandbox.status, JSON.parse(sandbox.text).detail]).toEqual([
      422,
      `Sandbox '${"s".repeat(140)}…' is not a known mode. Allowed: read-only, workspace-write, danger-full-access.`,
    ]);
    const notJson = await postRun(base, null, { rawBody: "{not json" });
    expect(notJson.status).toBe(422);
    expect(JSON.parse(notJson.text).detail).toEqual([
      {
        type: "json_invalid",
        loc: ["body", 1],
        msg: "JSON decode error",
        input: {},
        ctx: { error: "Expecting property name enclosed in double quotes" },
      },
    ]);
    // Nothing was created for any refused request, inside or outside the root: the root holds
    // only the runner's own dot-named directories (its git template, spare workspaces, and the
    // staging directory the template was made in).
    expect(existsSync(path.join(server.home, "escape"))).toBe(false);
    await server.app.spares.whenFilled();
    expect((await readdir(server.workspacesRoot)).sort()).toEqual([
      ".runner-git-template",
      ".runner-spares",
      ".runner-staging",
    ]);
  });

  // FermiLink makes a new session only for a missing or empty session_id. A blank one made a new
  // session on every run, so a client sending it never saw its earlier work.
  it("refuses a blank session_id on both faces, saying what to send; an empty one gets a new session", async () => {
    const s = await startTestServer();
    server = s;
    const connect = createClient(
      RunService,
      createConnectTransport({ baseUrl: s.baseUrl, httpVersion: "1.1" }),
    );
    const grpc = createClient(RunService, createGrpcTransport({ baseUrl: s.baseUrl }));
    for (const blank of ["   ", "\t", " \n "]) {
      const message = `session_id ${JSON.stringify(blank)} is blank: use 1 to 128 characters from A-Z, a-z, 0-9, '.', '_' and '-', starting with a letter or digit, or omit it (or send it empty) to get a new session.`;
      const res = await postRun(s.baseUrl, { user_prompt: "hi", session_id: blank });
      expect({ status: res.status, body: JSON.parse(res.text) }).toEqual({
        status: 422,
        body: { detail: message, code: "SESSION_ID_INVALID" },
      });
      for (const client of [connect, grpc]) {
        const err = await collect(client.run({ userPrompt: "hi", sessionId: blank })).then(
          () => null,
          (e: unknown) => ConnectError.from(e),
        );
        expect({ code: err?.code, message: err?.rawMessage }).toEqual({
          code: Code.InvalidArgument,
          message,
        });
      }
    }
    await s.app.spares.whenFilled();
    expect((await readdir(s.workspacesRoot)).sort()).toEqual([
      ".runner-git-template",
      ".runner-spares",
      ".runner-staging",
    ]);
    const empty = await postRun(s.baseUrl, { user_prompt: "hi", session_id: "" });
    expect(empty.status).toBe(200);
    expect(JSON.parse(empty.events[0]?.data ?? "{}").session_id).toMatch(/^[0-9a-f]{32}$/);
  });

  it("gives every 422 entry the input pydantic v2 gives, in the model's field order", async () => {
    server = await startTestServer();
    const post = (body: string, type = "application/json") =>
      fetch(`${(server as TestServer).baseUrl}/run`, {
        method: "POST",
        headers: { "content-type": type },
        body,
      });
    const notObject = "Input should be a valid dictionary or object to extract fields from";
    // [body, content type, detail]: as FastAPI 0.142 / pydantic 2.13 answer them for
    // FermiLink's RunRequest (user_prompt: str = Field(..., min_length=1)).
    const cases: [string, string, unknown[]][] = [
      [
        '{"a": 1}',
        "application/json",
        [{ type: "missing", loc: ["body", "user_prompt"], msg: "Field required", input: { a: 1 } }],
      ],
      [
        '{"user_prompt": 5, "session_id": 7}',
        "application/json",
        [
          {
            type: "string_type",
            loc: ["body", "session_id"],
            msg: "Input should be a valid string",
            input: 7,
          },
          {
            type: "string_type",
            loc: ["body", "user_prompt"],
            msg: "Input should be a valid string",
            input: 5,
          },
        ],
      ],
      [
        '{"user_prompt": "", "session_id": 7}',
        "application/json",
        [
          {
            type: "string_type",
            loc: ["body", "session_id"],
            msg: "Input should be a valid string",
            input: 7,
          },
          {
            type: "string_too_short",
            loc: ["body", "user_prompt"],
            msg: "String should have at least 1 character",
            input: "",
            ctx: { min_length: 1 },
          },
        ],
      ],
      [
        '{"user_prompt": ""}',
        "application/json",
        [
          {
            type: "string_too_short",
            loc: ["body", "user_prompt"],
            msg: "String should have at least 1 character",
            input: "",
            ctx: { min_length: 1 },
          },
        ],
      ],
      [
        '{"user_prompt": null, "sandbox": ["x"]}',
        "application/json",
        [
          {
            type: "string_type",
            loc: ["body", "user_prompt"],
            msg: "Input should be a valid string",
            input: null,
          },
          {
            type: "string_type",
            loc: ["body", "sandbox"],
            msg: "Input should be a valid string",
            input: ["x"],
          },
        ],
      ],
      // detach is read as pydantic's lax bool: a string or whole number it cannot read is
      // bool_parsing, any other type (a fraction too) bool_type.
      ...(
        [
          ['"maybe"', "maybe", "bool_parsing"],
          ['" true"', " true", "bool_parsing"],
          ['""', "", "bool_parsing"],
          ["2", 2, "bool_parsing"],
          ["-1", -1, "bool_parsing"],
          ["2.0", 2, "bool_parsing"],
          ["0.5", 0.5, "bool_type"],
          ["[true]", [true], "bool_type"],
          ["{}", {}, "bool_type"],
        ] as const
      ).map(([json, input, type]): [string, string, unknown[]] => [
        `{"user_prompt": "hi", "detach": ${json}}`,
        "application/json",
        [
          {
            type,
            loc: ["body", "detach"],
            msg:
              type === "bool_type"
                ? "Input should be a valid boolean"
                : "Input should be a valid boolean, unable to interpret input",
            input,
          },
        ],
      ]),
      [
        '{"user_prompt": 5, "detach": "nope"}',
        "application/json",
        [
          {
            type: "string_type",
            loc: ["body", "user_prompt"],
            msg: "Input should be a valid string",
            input: 5,
          },
          {
            type: "bool_parsing",
            loc: ["body", "detach"],
            msg: "Input should be a valid boolean, unable to interpret input",
            input: "nope",
          },
        ],
      ],
      [
        "[1,2]",
        "application/json",
        [{ type: "model_attributes_type", loc: ["body"], msg: notObject, input: [1, 2] }],
      ],
      [
        '"s"',
        "application/json",
        [{ type: "model_attributes_type", loc: ["body"], msg: notObject, input: "s" }],
      ],
      [
        "hello",
        "text/plain",
        [{ type: "model_attributes_type", loc: ["body"], msg: notObject, input: "hello" }],
      ],
    ];
    for (const [body, type, detail] of cases) {
      const res = await post(body, type);
      const got = (await res.json()) as { detail: unknown };
      expect({ body, status: res.status, detail: got.detail }).toEqual({
        body,
        status: 422,
        detail,
      });
    }
    expect(server.app.pipeline.liveRuns).toBe(0);
  });

  it("reads detach as pydantic's lax bool: true/false, 0/1 and its words in any case", async () => {
    const s = await startTestServer();
    server = s;
    const cases: [string, boolean][] = [
      ["1", true],
      ['"True"', true],
      ['"yes"', true],
      ['"ON"', true],
      ['"t"', true],
      ["1.0", true],
      ["0", false],
      ['"off"', false],
      ['"N"', false],
      ["false", false],
    ];
    for (const [json, detached] of cases) {
      const res = await postRun(s.baseUrl, null, {
        rawBody: `{"user_prompt": "hi", "session_id": "lax", "detach": ${json}}`,
      });
      expect({ json, status: res.status }).toEqual({ json, status: 200 });
      const runId = JSON.parse(res.events[0]?.data ?? "{}").run_id;
      const run = (await (await fetch(`${s.baseUrl}/runs/${runId}`)).json()) as {
        detached: boolean;
      };
      expect({ json, detached: run.detached }).toEqual({ json, detached });
    }
  });

  it("answers malformed JSON as FastAPI does: json_invalid at Python's position with Python's reason", async () => {
    server = await startTestServer();
    const post = (body: string | Buffer) =>
      fetch(`${(server as TestServer).baseUrl}/run`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
      });
    // [body, loc index (characters, as a Python str counts them), ctx.error]
    const cases: [string, number, string][] = [
      ["{not json", 1, "Expecting property name enclosed in double quotes"],
      ['{"user_prompt": "\u{1F600}é" "x"}', 21, "Expecting ',' delimiter"],
      ['{"user_prompt": "hi",}', 20, "Illegal trailing comma before end of object"],
      ['{"user_prompt": "hi"} x', 22, "Extra data"],
      ['{"user_prompt": "a\nb"}', 18, "Invalid control character at"],
      ['{"user_prompt": "\\x"}', 17, "Invalid \\escape"],
      ["   ", 3, "Expecting value"],
    ];
    for (const [body, pos, error] of cases) {
      const res = await post(body);
      expect({ body, status: res.status, json: await res.json() }).toEqual({
        body,
        status: 422,
        json: {
          detail: [
            {
              type: "json_invalid",
              loc: ["body", pos],
              msg: "JSON decode error",
              input: {},
              ctx: { error },
            },
          ],
          code: "REQUEST_INVALID",
        },
      });
    }
    // Size changes nothing: a body over 64 Ki characters (where JSON.parse once located the
    // error, in V8's words) gets Python's reason at Python's position too, the emoji counted once.
    const big = `{"user_prompt": "\u{1F600}${"y".repeat(70_000)}",}`;
    const bigRes = await post(big);
    expect(bigRes.status).toBe(422);
    expect(((await bigRes.json()) as { detail: unknown[] }).detail).toEqual([
      {
        type: "json_invalid",
        loc: ["body", 70_019],
        msg: "JSON decode error",
        input: {},
        ctx: { error: "Illegal trailing comma before end of object" },
      },
    ]);
    // No body (or `null`) is a missing body, whatever the content type says.
    for (const body of ["", "null"]) {
      const res = await post(body);
      expect(res.status).toBe(422);
      expect(((await res.json()) as { detail: unknown }).detail).toEqual([
        { type: "missing", loc: ["body"], msg: "Field required", input: null },
      ]);
    }
    // Bytes that are not UTF-8 never reach the JSON parser: FastAPI's 400.
    const notUtf8 = await post(Buffer.from([0x7b, 0xff, 0x7d]));
    expect(notUtf8.status).toBe(400);
    expect(((await notUtf8.json()) as { detail: unknown }).detail).toBe(
      "There was an error parsing the body",
    );
    // Valid JSON nested deeper than Python's json.loads goes (its recursion limit) is FastAPI's
    // 400 too, though JSON.parse would take it; strings holding brackets do not count.
    const deep = `{"user_prompt": "hi", "a": ${"[".repeat(5000)}${"]".repeat(5000)}}`;
    const tooDeep = await post(deep);
    expect(tooDeep.status).toBe(400);
    expect(((await tooDeep.json()) as { detail: unknown }).detail).toBe(
      "There was an error parsing the body",
    );
    const bracketsInText = await post(
      JSON.stringify({ session_id: "brackets", user_prompt: `[{"\\"${"[".repeat(5000)}` }),
    );
    expect(bracketsInText.status).toBe(200);
    await bracketsInText.body?.cancel();
    // What Python's json.loads takes and JSON.parse does not: a UTF-8 BOM, NaN.
    const bom = await post(
      Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"user_prompt": "hi"}')]),
    );
    expect(bom.status).toBe(200);
    await bom.text();
    const nan = await post('{"user_prompt": NaN}');
    expect(nan.status).toBe(422);
    // pydantic's input is Python's nan, which FastAPI cannot even encode (a 500); JSON says null.
    expect(((await nan.json()) as { detail: unknown }).detail).toEqual([
      {
        type: "string_type",
        loc: ["body", "user_prompt"],
        msg: "Input should be a valid string",
        input: null,
      },
    ]);
  });

  it("reads UTF-16 and UTF-32 bodies, and NaN or Infinity at any size, as Python's json.loads does", async () => {
    server = await startTestServer();
    const post = (body: Buffer | string) =>
      fetch(`${(server as TestServer).baseUrl}/run`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
      });
    const stringType = (input: unknown) => [
      {
        type: "string_type",
        loc: ["body", "user_prompt"],
        msg: "Input should be a valid string",
        input,
      },
    ];
    const utf16le = Buffer.from('{"user_prompt": 5}', "utf16le");
    const utf32be = Buffer.alloc(4 * 18);
    for (const [i, c] of [...'{"user_prompt": 5}'].entries()) {
      utf32be.writeUInt32BE(c.charCodeAt(0), 4 * i);
    }
    for (const [body, input] of [
      [utf16le, 5], // no BOM: found by its zero bytes (json.detect_encoding)
      [Buffer.concat([Buffer.from([0xff, 0xfe]), utf16le]), 5],
      [utf32be, 5],
      [Buffer.concat([Buffer.from([0, 0, 0xfe, 0xff]), utf32be]), 5],
      // Past 64 Ki characters, where V8's parser locates errors: Python's constants still read
      // (the input, Python's nan, is JSON's null).
      [`{"user_prompt": NaN, "pad": "${"y".repeat(70_000)}", "inf": [Infinity, -Infinity]}`, null],
    ] as const) {
      const res = await post(body);
      expect({ status: res.status, body: await res.json() }).toEqual({
        status: 422,
        body: { detail: stringType(input), code: "REQUEST_INVALID" },
      });
    }
    // A JSON error in UTF-16 is located in characters; what the codec refuses is FastAPI's 400.
    const bad = await post(Buffer.from('{"user_prompt" 1}', "utf16le"));
    // As CPython 3.11 answers it: "Expecting ':' delimiter" at character 15.
    expect(((await bad.json()) as { detail: { loc: unknown }[] }).detail[0]?.loc).toEqual([
      "body",
      15,
    ]);
    const truncated = await post(Buffer.concat([utf16le, Buffer.from([0x20])]));
    expect({ status: truncated.status, body: await truncated.json() }).toEqual({
      status: 400,
      body: { detail: "There was an error parsing the body", code: "BODY_UNREADABLE" },
    });
  });

  it("takes a client that leaves mid-upload for no runner error", async () => {
    const s = await startTestServer();
    server = s;
    const errors = vi.spyOn(s.app.logger, "error");
    await new Promise<void>((resolve) => {
      const socket = net.connect(s.app.port, "127.0.0.1", () => {
        socket.write(
          'POST /run HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"user_',
        );
        setTimeout(() => socket.destroy(), 100);
      });
      socket.on("close", () => resolve());
    });
    await new Promise((r) => setTimeout(r, 200));
    expect(errors.mock.calls.map((c) => c.at(-1))).toEqual([]);
    expect((await postRun(s.baseUrl, { user_prompt: "after" })).status).toBe(200);
  });

  it("answers a body over 1 MiB with 413 without reading it all, and keeps serving", async () => {
    server = await startTestServer();
    const huge = JSON.stringify({ user_prompt: "x", pad: "y".repeat(2 * 1024 * 1024) });
    const res = await postRun(server.baseUrl, null, { rawBody: huge });
    expect(res.status).toBe(413);
    expect(res.headers.get("connection")).toBe("close");
    expect(JSON.parse(res.text).detail).toBe("Request body too large.");
    expect((await postRun(server.baseUrl, { user_prompt: "after" })).status).toBe(200);
  });

  it("answers Expect: 100-continue with a Content-Length over 1 MiB 413 at once, never inviting the body", async () => {
    const s = await startTestServer();
    server = s;
    // Headers only: a client that asked to be told waits, and no body byte is ever sent.
    const got = await new Promise<{ text: string; closed: boolean }>((resolve) => {
      const chunks: Buffer[] = [];
      const socket = net.connect(s.app.port, "127.0.0.1", () => {
        socket.write(
          "POST /run HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
            `Content-Length: ${2 * 1024 * 1024}\r\nExpect: 100-continue\r\n\r\n`,
        );
      });
      const wait = setTimeout(() => {
        socket.destroy();
        resolve({ text: Buffer.concat(chunks).toString("latin1"), closed: false });
      }, 3000);
      socket.on("data", (d: Buffer) => chunks.push(d));
      socket.on("error", () => {});
      socket.on("close", () => {
        clearTimeout(wait);
        resolve({ text: Buffer.concat(chunks).toString("latin1"), closed: true });
      });
    });
    expect(got.text.split("\r\n", 1)[0]).toBe("HTTP/1.1 413 Payload Too Large");
    expect(got.text).not.toContain("100 Continue");
    expect(got.text.slice(got.text.indexOf("\r\n\r\n") + 4)).toBe(
      '{"detail":"Request body too large."}',
    );
    // The body may still come after a refusal without 100 Continue: the connection ends.
    expect(got.closed).toBe(true);
  });

  it("still answers 100 Continue to a body within the limit, reads it, and runs", async () => {
    const s = await startTestServer();
    server = s;
    const body = JSON.stringify({ user_prompt: "hi", session_id: "expect-continue" });
    const text = await new Promise<string>((resolve, reject) => {
      let seen = "";
      let sent = false;
      const socket = net.connect(s.app.port, "127.0.0.1", () => {
        socket.write(
          "POST /run HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n" +
            `Content-Length: ${Buffer.byteLength(body)}\r\nExpect: 100-continue\r\n\r\n`,
        );
      });
      socket.on("data", (d: Buffer) => {
        seen += d.toString("latin1");
        // Nothing is sent before the server said to.
        if (!sent && seen.startsWith("HTTP/1.1 100 Continue\r\n\r\n")) {
          sent = true;
          socket.write(body);
        }
      });
      socket.on("error", reject);
      socket.on("close", () => resolve(seen));
    });
    const final = text.slice("HTTP/1.1 100 Continue\r\n\r\n".length);
    expect(text.startsWith("HTTP/1.1 100 Continue\r\n\r\n")).toBe(true);
    expect(final.split("\r\n", 1)[0]).toBe("HTTP/1.1 200 OK");
    expect(final).toContain("event: runner.exit");
    expect(final).toContain('"session_id": "expect-continue"');
  });

  it("answers a request it never reads (404, 405, 307) without inviting its body", async () => {
    const s = await startTestServer();
    server = s;
    const body = Buffer.from(JSON.stringify({ user_prompt: "hi" }));
    for (const [target, status] of [
      ["/no-such-route", "404 Not Found"],
      ["/healthz", "405 Method Not Allowed"],
      ["/run/", "307 Temporary Redirect"],
    ] as const) {
      const got = await expectContinue(s.app.port, target, "application/json", body);
      expect({ target, status: got.text.split("\r\n", 1)[0] }).toEqual({
        target,
        status: `HTTP/1.1 ${status}`,
      });
      // The body may still come after an answer without 100 Continue: the connection ends.
      expect({ target, continued: got.continued, closed: got.closed }).toEqual({
        target,
        continued: false,
        closed: true,
      });
    }
  });

  it("invites an HTTP/2 body that expects 100-continue when it reads it, never one declared over 1 MiB", async () => {
    const s = await startTestServer();
    server = s;
    const session = http2.connect(s.baseUrl);
    session.on("error", () => {});
    /** `body` is sent on a 100 Continue; `length` is the Content-Length declared. */
    const call = (body: Buffer, length: number) =>
      new Promise<{ status: number | undefined; continued: boolean; text: string }>((resolve) => {
        let continued = false;
        let status: number | undefined;
        let text = "";
        const stream = session.request({
          ":method": "POST",
          ":path": "/run",
          "content-type": "application/json",
          "content-length": String(length),
          expect: "100-continue",
        });
        // A server that invited the body waits for it: no answer then.
        const wait = setTimeout(() => resolve({ status, continued, text }), 5000);
        stream.on("error", () => {});
        stream.on("continue", () => {
          continued = true;
          stream.end(body);
        });
        stream.on("response", (h) => {
          status = h[":status"];
          if (status !== 200) stream.close();
        });
        stream.on("data", (d: Buffer) => {
          text += d.toString();
        });
        stream.on("close", () => {
          clearTimeout(wait);
          resolve({ status, continued, text });
        });
      });
    try {
      const over = await call(Buffer.alloc(0), 2 * 1024 * 1024);
      expect({ status: over.status, continued: over.continued }).toEqual({
        status: 413,
        continued: false,
      });
      const body = Buffer.from(JSON.stringify({ user_prompt: "hi", session_id: "h2-continue" }));
      const within = await call(body, body.length);
      expect({ status: within.status, continued: within.continued }).toEqual({
        status: 200,
        continued: true,
      });
      expect(within.text).toContain("event: runner.exit");
      expect(within.text).toContain('"session_id": "h2-continue"');
    } finally {
      session.close();
    }
  });

  it("answers a body over 1 MiB on HTTP/2 with 413, then resets the stream (NO_ERROR) so the upload ends", async () => {
    server = await startTestServer();
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`);
    process.on("warning", onWarning);
    try {
      for (const bytes of [1.1 * 1024 * 1024, 4 * 1024 * 1024]) {
        const res = await h2Upload(
          server.baseUrl,
          { ":path": "/run", "content-type": "application/json" },
          Math.round(bytes),
        );
        expect(res.status).toBe(413);
        expect(JSON.parse(res.body.toString()).detail).toBe("Request body too large.");
        // The client never ended its upload: only the server's reset can have closed the stream.
        expect({ closed: res.closed, rstCode: res.rstCode }).toEqual({ closed: true, rstCode: 0 });
      }
    } finally {
      process.off("warning", onWarning);
    }
    // No hop-by-hop header on HTTP/2 (node warns and drops a `connection` header).
    expect(warnings).toEqual([]);
    expect((await postRun(server.baseUrl, { user_prompt: "after" })).status).toBe(200);
  });

  it("counts the prompt limit in code points, not UTF-16 units", async () => {
    server = await startTestServer();
    const emoji = "\u{1F600}"; // two UTF-16 units, one code point
    const ok = await postRun(server.baseUrl, { user_prompt: emoji.repeat(10_000) });
    expect(ok.status).toBe(200);
    const tooLong = await postRun(server.baseUrl, { user_prompt: emoji.repeat(10_001) });
    expect(tooLong.status).toBe(413);
  });

  it("accepts a narrowing sandbox and the configured provider, and ignores unknown fields", async () => {
    server = await startTestServer();
    const res = await postRun(server.baseUrl, {
      session_id: "narrow",
      user_prompt: "hi",
      sandbox: " Read-Only ",
      provider: "CODEX",
      extra_field: true,
    });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.events[0]?.data ?? "{}").agent.sandbox_mode).toBe("read-only");
    const inv = await invocation(server, "narrow");
    expect(inv.argv).toContain("--sandbox");
    expect(inv.argv[inv.argv.indexOf("--sandbox") + 1]).toBe("read-only");
  });

  // FermiLink's test_resolve_run_policy_honors_bypass_policy, and its manual check that meta.agent
  // matches the configured policy: under bypass the request's sandbox is ignored (null), the
  // model and effort come from the policy, and codex is started without a sandbox.
  it("reports the configured policy in meta.agent and argv: bypass ignores a requested sandbox", async () => {
    server = await startTestServer({
      FERMILINK_AGENT_SANDBOX_POLICY: "bypass",
      FERMILINK_AGENT_MODEL: "gpt-5.3-codex",
      FERMILINK_AGENT_REASONING_EFFORT: "high",
    });
    const res = await postRun(server.baseUrl, {
      session_id: "bypass",
      user_prompt: "hi",
      sandbox: "read-only",
    });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.events[0]?.data ?? "{}").agent).toEqual({
      provider: "codex",
      sandbox_policy: "bypass",
      sandbox_mode: null,
      model: "gpt-5.3-codex",
      reasoning_effort: "high",
    });
    const { argv } = await invocation(server, "bypass");
    expect(argv).toContain("--dangerously-bypass-approvals-and-sandbox");
    expect(argv).not.toContain("--sandbox");
    expect(argv.slice(argv.indexOf("--model"), argv.indexOf("--model") + 4)).toEqual([
      "--model",
      "gpt-5.3-codex",
      "--config",
      'model_reasoning_effort="high"',
    ]);
    expect(JSON.parse(res.events.at(-1)?.data ?? "{}").reason).toBe("completed");
  });

  // FermiLink's test_ensure_template_agents_file_* (spec §9), through runs: the policy file is
  // read for every run, so one session sees the provider change.
  it("keeps only the active provider's alias to AGENTS.md as the policy file switches provider", async () => {
    server = await startTestServer({
      FERMILINK_CLAUDE_BIN: FAKE_AGENT,
      FERMILINK_GEMINI_BIN: FAKE_AGENT,
    });
    const s = server;
    const repo = path.join(s.workspacesRoot, "alias", "repo");
    const agents = await readFile(path.join(BUILTIN_TEMPLATE_DIR, "AGENTS.md"), "utf8");
    const runAs = async (provider: string) => {
      await writeFile(path.join(s.home, "agent_runtime.json"), JSON.stringify({ provider }));
      const res = await postRun(s.baseUrl, { session_id: "alias", user_prompt: "hi" });
      expect(JSON.parse(res.events[0]?.data ?? "{}").agent.provider).toBe(provider);
      expect(JSON.parse(res.events.at(-1)?.data ?? "{}").reason).toBe("completed");
    };
    const aliasOf = async (name: string) => {
      const file = path.join(repo, name);
      if (!existsSync(file)) return null;
      const link = (await lstat(file)).isSymbolicLink() ? await readlink(file) : "file";
      return { link, text: await readFile(file, "utf8") };
    };

    await runAs("gemini");
    expect(await aliasOf("GEMINI.md")).toEqual({ link: "AGENTS.md", text: agents });
    expect(await aliasOf("CLAUDE.md")).toBeNull();
    // The stale GEMINI.md link goes when claude is active.
    await runAs("claude");
    expect(await aliasOf("CLAUDE.md")).toEqual({ link: "AGENTS.md", text: agents });
    expect(await aliasOf("GEMINI.md")).toBeNull();
    // A real inactive alias file is the user's: kept. Codex has no alias.
    await writeFile(path.join(repo, "GEMINI.md"), "user's own notes");
    await runAs("codex");
    expect(await aliasOf("CLAUDE.md")).toBeNull();
    expect(await aliasOf("GEMINI.md")).toEqual({ link: "file", text: "user's own notes" });
  });

  it("answers 404 for unknown paths and 405 for GET /run", async () => {
    server = await startTestServer();
    expect((await fetch(`${server.baseUrl}/nope`)).status).toBe(404);
    const get = await fetch(`${server.baseUrl}/run`);
    expect(get.status).toBe(405);
    await get.text();
  });
});

describe("SSE stream metrics", () => {
  it("counts no event of a write the client never took: none once it has reset the stream", async () => {
    server = await startTestServer();
    const s = server;
    const run = await postRun(s.baseUrl, {
      session_id: "gone",
      user_prompt: "#scenario=lines-5000",
    });
    const runId = JSON.parse(run.events.find((e) => e.event === "meta")?.data ?? "{}").run_id;
    const streamed = () => streamedEvents(s, "sse");
    const before = await streamed();
    // h2c with no flow-control window: the replay's first write (a 64 KB chunk of frames) waits
    // for a drain that never comes.
    const session = http2.connect(s.baseUrl, { settings: { initialWindowSize: 0 } });
    try {
      const call = session.request({ ":method": "GET", ":path": `/runs/${runId}/events` });
      call.on("error", () => {});
      await new Promise<void>((resolve, reject) => {
        call.on("response", (h) =>
          h[":status"] === 200 ? resolve() : reject(new Error(`status ${h[":status"]}`)),
        );
        call.on("close", () => reject(new Error("the call closed before its response head")));
      });
      // The replay reads its first batches and blocks in its first write.
      await new Promise((r) => setTimeout(r, 300));
      call.close(http2.constants.NGHTTP2_CANCEL);
      await new Promise((r) => call.on("close", r));
      // The frames gathered for the write that found the client gone are not counted.
      await new Promise((r) => setTimeout(r, 500));
      expect(await streamed()).toBe(before);
    } finally {
      session.destroy();
    }
  });
});
