import { mkdir } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import net from "node:net";
import path from "node:path";
import type { Browser, Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { chromiumAvailable, launchChromium } from "../helpers/browser.js";
import { writePackageRoot } from "../helpers/package-tree.js";
import {
  FAKE_AGENT,
  startGatedTestServer,
  startTestServer,
  type TestServer,
} from "../helpers/start-server.js";

// In CI the browser is installed by .ci/run: missing it there is a failure, not a skip.
const run = chromiumAvailable || process.env.CI ? describe : describe.skip;
const ARTIFACTS = path.resolve("test-artifacts");
/** MAX_SHOWN_EVENTS of web/src/render.ts (a DOM module, outside this project's tsconfig). */
const MAX_SHOWN_EVENTS = 2000;

let browser: Browser;
let server: TestServer | undefined;

beforeAll(async () => {
  if (chromiumAvailable || process.env.CI) browser = await launchChromium();
  await mkdir(ARTIFACTS, { recursive: true });
});
afterAll(async () => {
  await browser?.close();
});
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

/**
 * Records every text the status line shows from now on, even one replaced within the same turn
 * (a replay's events come all at once). A string: this project's types have no DOM.
 */
async function recordStatus(page: Page): Promise<() => Promise<string[]>> {
  await page.evaluate(`(() => {
    const shown = (window.__statusShown = []);
    new MutationObserver((records) => {
      for (const r of records) for (const n of r.addedNodes) shown.push(n.textContent);
    }).observe(document.getElementById("status"), { childList: true });
  })()`);
  return async () => (await page.evaluate("window.__statusShown")) as string[];
}

/** A routed Connect error answer (unary JSON), as a runner sends it. */
function connectError(status: number, code: string, message: string) {
  return { status, contentType: "application/json", body: JSON.stringify({ code, message }) };
}

async function openApp(url: string): Promise<Page> {
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(url);
  expect(errors).toEqual([]);
  return page;
}

run("the browser app served at / (Connect-Web in headless Chromium)", () => {
  it("starts a run with a package from ListPackages, shows its events readably, and lists it", async () => {
    server = await startTestServer();
    await writePackageRoot(path.join(server.home, "scientific_packages"), {
      meep: { files: { "docs/x.md": "" } },
    });
    const page = await openApp(`${server.baseUrl}/`);
    await page.locator("#package option[value=meep]").waitFor({ state: "attached" });
    await page.fill("#prompt", "hello from the browser");
    await page.fill("#session", "web1");
    await page.fill("#user", "wendy");
    await page.selectOption("#package", "meep");
    await page.click("#start");
    const exit = page.locator(".ev-exit");
    await exit.waitFor();
    expect(await exit.textContent()).toContain("completed (return code 0)");
    expect(await exit.getAttribute("data-ok")).toBe("true");
    expect(await page.locator(".ev-meta").textContent()).toContain("package meep");
    expect(await page.locator(".ev-message").allTextContents()).toContain("hello from the browser");
    expect(await page.locator(".ev-log").count()).toBeGreaterThan(0);
    // Screen readers announce streamed events as they come: the events panel is a live log.
    expect(await page.getByRole("log").locator(".ev-exit").count()).toBe(1);
    await page.locator("#runs li").first().waitFor();
    expect(await page.locator("#runs li").first().textContent()).toContain(
      "hello from the browser",
    );
    await page.screenshot({ path: path.join(ARTIFACTS, "web-app-run.png"), fullPage: true });
    await page.close();
  });

  it("re-attaches to a live detached run after a reload and sees it end", async () => {
    const gated = await startGatedTestServer();
    server = gated;
    const page = await openApp(`${server.baseUrl}/`);
    await page.fill("#prompt", "#scenario=gated-lines long job");
    await page.fill("#user", "wendy");
    await page.check("#detach");
    await page.click("#start");
    await page.locator(".ev-meta").waitFor();
    await page.reload();
    await page.fill("#user", "wendy");
    await page.click("#refresh-runs");
    const row = page.locator("#runs li", { hasText: "running" });
    await row.waitFor();
    await row.locator("button", { hasText: "Attach" }).click();
    await page.locator(".ev-meta").waitFor();
    await gated.openGate();
    const exit = page.locator(".ev-exit");
    await exit.waitFor();
    expect(await exit.getAttribute("data-reason")).toBe("completed");
    expect(await page.locator(".ev-message").count()).toBeGreaterThanOrEqual(80);
    await page.screenshot({ path: path.join(ARTIFACTS, "web-app-reattach.png"), fullPage: true });
    await page.close();
  });

  it("stops a run it is still starting when another is watched, and shows only that one", async () => {
    server = await startTestServer();
    const page = await openApp(`${server.baseUrl}/`);
    await page.fill("#prompt", "first run");
    await page.click("#start");
    await page.locator(".ev-exit").waitFor();
    const replay = page.locator("#runs li button", { hasText: "Replay" });
    await replay.waitFor();
    // The next Run call is held in the browser: a watch that has no event yet.
    let arrived!: () => void;
    const held = new Promise<void>((r) => {
      arrived = r;
    });
    let release!: () => void;
    const released = new Promise<void>((r) => {
      release = r;
    });
    await page.route("**/fermilink.runner.v1.RunService/Run", async (route) => {
      arrived();
      await released;
      await route.continue().catch(() => {});
    });
    const isRun = (r: { url(): string }) => r.url().endsWith("/Run");
    const settled = Promise.race([
      page.waitForEvent("requestfailed", isRun).then(() => "cancelled"),
      page.waitForEvent("requestfinished", isRun).then(() => "sent"),
    ]);
    await page.fill("#prompt", "second run");
    await page.click("#start");
    await held;
    await replay.click();
    release();
    // Watching the replay stopped the run being started: its call was cancelled, never sent.
    expect(await settled).toBe("cancelled");
    await page.locator("#status", { hasText: "Ended: completed" }).waitFor();
    expect(await page.locator(".ev-meta").count()).toBe(1);
    expect(await page.locator(".ev-message").allTextContents()).toEqual(["first run"]);
    expect(server.app.pipeline.liveRuns).toBe(0);
    await page.close();
  });

  it("keeps the controls of a re-attached run when the watch it replaced ends", async () => {
    const gated = await startGatedTestServer();
    server = gated;
    const page = await openApp(`${server.baseUrl}/`);
    await page.fill("#prompt", "#scenario=gate attach twice");
    await page.check("#detach");
    await page.click("#start");
    await page.locator(".ev-meta").waitFor();
    await page.click("#refresh-runs");
    await page.locator("#runs li", { hasText: "running" }).locator("button").click();
    await page.locator("#status", { hasText: "Running" }).waitFor();
    await page.locator(".ev-meta").waitFor();
    // The first watch, stopped, has ended by now: the page still belongs to the second.
    await page.evaluate(() => new Promise((r) => setTimeout(r, 200)));
    expect(await page.locator("#status").textContent()).toBe("Running…");
    expect(await page.isDisabled("#start")).toBe(true);
    expect(await page.isEnabled("#cancel")).toBe(true);
    await page.click("#cancel");
    const exit = page.locator(".ev-exit");
    await exit.waitFor();
    expect(await exit.getAttribute("data-reason")).toBe("cancelled");
    expect(await page.isEnabled("#start")).toBe(true);
    await gated.openGate();
    await page.close();
  });

  it("lists the runs of the user now in the field when an earlier listing answers last", async () => {
    server = await startTestServer();
    const page = await openApp(`${server.baseUrl}/`);
    await page.fill("#user", "ann");
    await page.fill("#prompt", "ann's run");
    await page.click("#start");
    await page.locator(".ev-exit").waitFor();
    await page.locator("#runs li", { hasText: "ann's run" }).waitFor();
    // Ann's next listing is held until after Bob's has answered.
    let release!: () => void;
    const released = new Promise<void>((r) => {
      release = r;
    });
    await page.route("**/fermilink.runner.v1.RunService/ListRuns", async (route) => {
      if (route.request().postData()?.includes('"ann"')) await released;
      await route.continue();
    });
    const isList = (r: { url(): string }) => r.url().endsWith("/ListRuns");
    const annAnswered = page.waitForEvent("requestfinished", (r) =>
      Boolean(isList(r) && r.postData()?.includes('"ann"')),
    );
    await page.click("#refresh-runs");
    const bobAnswered = page.waitForEvent("requestfinished", (r) =>
      Boolean(isList(r) && r.postData()?.includes('"bob"')),
    );
    await page.fill("#user", "bob");
    await page.locator("#user").blur();
    await bobAnswered;
    release();
    await annAnswered;
    await page.evaluate(() => new Promise((r) => setTimeout(r, 100)));
    expect(await page.locator("#runs li").count()).toBe(0);
    await page.close();
  });

  it("shows a final result that repeats the last message once (claude's stream-json)", async () => {
    server = await startTestServer({
      FERMILINK_AGENT_PROVIDER: "claude",
      FERMILINK_CLAUDE_BIN: FAKE_AGENT,
    });
    const page = await openApp(`${server.baseUrl}/`);
    await page.fill("#prompt", "#scenario=claude-final-result");
    await page.click("#start");
    const exit = page.locator(".ev-exit");
    await exit.waitFor();
    expect(await exit.getAttribute("data-ok")).toBe("true");
    expect(await page.locator(".ev-message").allTextContents()).toEqual(["All done."]);
    await page.close();
  });

  it("calls a runner on another origin only when FERMILINK_RUNNER_CORS_ORIGINS allows it", async () => {
    // The page comes from a second server (another origin) and talks to the runner via ?runner=.
    const appServer = http.createServer(async (req, res) => {
      const target = `${server?.baseUrl}${req.url === "/" || req.url?.startsWith("/?") ? "/" : req.url}`;
      const upstream = await fetch(target);
      res.writeHead(upstream.status, {
        "content-type": upstream.headers.get("content-type") ?? "text/plain",
      });
      res.end(Buffer.from(await upstream.arrayBuffer()));
    });
    await new Promise<void>((r) => appServer.listen(0, "127.0.0.1", r));
    const appOrigin = `http://127.0.0.1:${(appServer.address() as AddressInfo).port}`;
    try {
      for (const allowed of [false, true]) {
        server = await startTestServer(allowed ? { FERMILINK_RUNNER_CORS_ORIGINS: appOrigin } : {});
        // localhost vs 127.0.0.1: a different origin for the browser, the same runner.
        const runnerUrl = server.baseUrl.replace("127.0.0.1", "localhost");
        const page = await openApp(`${appOrigin}/?runner=${encodeURIComponent(runnerUrl)}`);
        await page.fill("#prompt", "cross-origin hello");
        await page.click("#start");
        if (allowed) {
          await page.locator(".ev-exit").waitFor();
          expect(await page.locator(".ev-message").allTextContents()).toContain(
            "cross-origin hello",
          );
        } else {
          // The browser refuses the response (no CORS grant): the call fails, nothing is shown.
          await page.locator("#status", { hasText: "Failed to fetch" }).waitFor();
          expect(await page.locator(".ev-exit").count()).toBe(0);
        }
        await page.close();
        await server.stop();
        server = undefined;
      }
    } finally {
      await new Promise((r) => appServer.close(r));
    }
  });

  it("ignores a ?runner= naming another host: nothing is sent there, runs go to the page's runner", async () => {
    server = await startTestServer();
    const foreign = "http://runner.example:9";
    const page = await browser.newPage();
    const sentAway: string[] = [];
    page.on("request", (r) => {
      if (!r.url().startsWith(server?.baseUrl ?? "")) sentAway.push(r.url());
    });
    await page.route(`${foreign}/**`, (route) => route.fulfill({ status: 500 }));
    await page.goto(`${server.baseUrl}/?runner=${encodeURIComponent(foreign)}`);
    expect(await page.locator("#connection").textContent()).toBe(server.baseUrl);
    expect(await page.locator("#status").textContent()).toContain(`Ignored ?runner=${foreign}`);
    await page.fill("#user", "wendy");
    await page.fill("#prompt", "stays home");
    await page.click("#start");
    await page.locator(".ev-exit").waitFor();
    expect(await page.locator(".ev-message").allTextContents()).toContain("stays home");
    expect(sentAway).toEqual([]);
    await page.close();
  });

  it("shows provider output containing HTML as text: no element is made, no handler runs", async () => {
    server = await startTestServer();
    // The CSP would stop an inline handler; bypassing it shows that nothing is parsed as HTML at all.
    const page = await browser.newPage({ bypassCSP: true });
    await page.goto(`${server.baseUrl}/`);
    const payload = '<img src=x onerror="window.__xss=(window.__xss||0)+1">';
    await page.fill("#prompt", `#scenario=html-in-output ${payload}`);
    await page.click("#start");
    await page.locator(".ev-exit").waitFor();
    await page.locator("#runs li", { hasText: "html-in-output" }).waitFor();
    await page.evaluate(() => new Promise((r) => setTimeout(r, 200)));
    expect(await page.locator("#events img, #runs img").count()).toBe(0);
    expect(await page.evaluate(() => (globalThis as { __xss?: number }).__xss)).toBeUndefined();
    // Every kind of provider text arrived, each with the markup as literal text.
    const text = (await page.locator("#events").textContent()) ?? "";
    for (const shown of [
      `msg ${payload}`,
      `think ${payload}`,
      `$ echo ${payload}`,
      `out ${payload}`,
      `add dir/${payload}.txt`,
      `Tool srv${payload}.tool${payload}`,
      `res ${payload}`,
      `err ${payload}`,
      `not json ${payload}`,
      `stderr ${payload}`,
    ])
      expect(text).toContain(shown);
    expect(await page.locator("#runs li .preview").first().textContent()).toContain(payload);
    await page.close();
  });

  it("keeps at most MAX_SHOWN_EVENTS events on screen for a long stream, and says how many it dropped", async () => {
    server = await startTestServer();
    const page = await openApp(`${server.baseUrl}/`);
    await page.fill("#prompt", "#scenario=lines-5000");
    await page.click("#start");
    const exit = page.locator(".ev-exit");
    await exit.waitFor({ timeout: 30_000 });
    expect(await exit.getAttribute("data-reason")).toBe("completed");
    // meta + 5000 messages + a stderr line + exit.
    const total = 5003;
    expect(await page.locator("#events > .ev:not(.ev-dropped)").count()).toBe(MAX_SHOWN_EVENTS);
    expect(await page.locator(".ev-dropped").textContent()).toBe(
      `${total - MAX_SHOWN_EVENTS} earlier events not shown`,
    );
    // The view followed the stream to its end (it scrolls once a frame).
    expect(
      await page.locator("#events").evaluate(async (el) => {
        const frame = (globalThis as unknown as { requestAnimationFrame(cb: () => void): void })
          .requestAnimationFrame;
        for (let i = 0; i < 2; i++) await new Promise<void>((r) => frame(() => r()));
        return el.scrollTop + el.clientHeight >= el.scrollHeight - 4;
      }),
    ).toBe(true);
    // A replay comes all at once (more load than the live stream): the same limit and note.
    await page.locator("#runs li button", { hasText: "Replay" }).click();
    await page.locator("#status", { hasText: "Ended: completed" }).waitFor({ timeout: 30_000 });
    expect(await page.locator("#events > .ev:not(.ev-dropped)").count()).toBe(MAX_SHOWN_EVENTS);
    expect(await page.locator(".ev-exit").count()).toBe(1);
    expect(await page.locator(".ev-dropped").textContent()).toBe(
      `${total - MAX_SHOWN_EVENTS} earlier events not shown`,
    );
    await page.close();
  }, 60_000);

  it("cancels as the user who started the run, even after the User field was changed", async () => {
    const gated = await startGatedTestServer();
    server = gated;
    const page = await openApp(`${server.baseUrl}/`);
    await page.fill("#user", "wendy");
    await page.fill("#prompt", "#scenario=gate cancel me");
    await page.click("#start");
    await page.locator(".ev-meta").waitFor();
    await page.fill("#user", "mallory");
    await page.locator("#user").blur();
    await page.click("#cancel");
    const exit = page.locator(".ev-exit");
    await exit.waitFor();
    expect(await exit.getAttribute("data-reason")).toBe("cancelled");
    await gated.openGate();
    await page.close();
  });

  it("shows the server's error code and message when a call fails", async () => {
    server = await startTestServer();
    const page = await openApp(`${server.baseUrl}/`);
    await page.fill("#prompt", "hi");
    await page.fill("#session", "../escape");
    await page.click("#start");
    await page.locator("#status", { hasText: "InvalidArgument: " }).waitFor();
    expect(await page.isEnabled("#start")).toBe(true);
    await page.close();
  });

  it("sends the Token field as a bearer token on every call, keeps it for the tab across a reload, and sends none when it is empty", async () => {
    const token = "tok-0123456789abcdef";
    // A runner with auth on: the calls below succeed only with the token.
    server = await startTestServer({ FERMILINK_RUNNER_AUTH_TOKENS: `service:${token}` });
    const page = await openApp(`${server.baseUrl}/`);
    // Every call the page makes, with the Authorization it carried (allHeaders: headers() may
    // leave security-related ones out).
    const calls: Promise<{ method: string; auth: string | undefined }>[] = [];
    page.on("request", (r) => {
      const method = /\/fermilink\.runner\.v1\.\w+\/(\w+)$/.exec(r.url())?.[1];
      if (method !== undefined)
        calls.push(r.allHeaders().then((h) => ({ method, auth: h.authorization })));
    });
    const sent = () => Promise.all(calls.splice(0));
    expect(await page.getAttribute("#token", "type")).toBe("password");
    expect(await page.getAttribute("#token", "autocomplete")).toBe("off");
    await page.fill("#token", token);
    await page.fill("#prompt", "with a token");
    await page.click("#start");
    await page.locator("#status", { hasText: "Ended: completed" }).waitFor();
    await page.locator("#runs li", { hasText: "with a token" }).waitFor();
    // The token's change reloads the packages and the list; then the run and the list after it.
    const withToken = await sent();
    expect(withToken.map((c) => c.method)).toEqual(
      expect.arrayContaining(["ListPackages", "Run", "ListRuns"]),
    );
    for (const c of withToken)
      expect(c, c.method).toEqual({ method: c.method, auth: `Bearer ${token}` });
    // Kept for this tab only: sessionStorage, never localStorage.
    expect(await page.evaluate("JSON.stringify(Object.values(sessionStorage))")).toBe(
      JSON.stringify([token]),
    );
    expect(await page.evaluate("localStorage.length")).toBe(0);
    await page.reload();
    await page.locator("#runs li", { hasText: "with a token" }).waitFor();
    expect(await page.inputValue("#token")).toBe(token);
    const afterReload = await sent();
    expect(afterReload.map((c) => c.method).sort()).toEqual(["ListPackages", "ListRuns"]);
    for (const c of afterReload) expect(c.auth, c.method).toBe(`Bearer ${token}`);
    // Emptied: nothing is kept and no header is sent, so this runner refuses the run.
    await page.fill("#token", "");
    await page.fill("#prompt", "without a token");
    await page.click("#start");
    await page.locator("#status", { hasText: "The runner needs a token: " }).waitFor();
    const without = await sent();
    expect(without.map((c) => c.method)).toContain("Run");
    for (const c of without) expect(c.auth, c.method).toBeUndefined();
    expect(await page.evaluate("sessionStorage.length")).toBe(0);
    await page.close();
  });

  it("says the runner needs a token when a call is refused as unauthenticated or not allowed", async () => {
    server = await startTestServer();
    const page = await openApp(`${server.baseUrl}/`);
    // What a runner with auth on answers (the server side is tested with the server): the end
    // of the Run stream, and a unary refusal for the list.
    const end = Buffer.from(
      JSON.stringify({
        error: { code: "unauthenticated", message: "send Authorization: Bearer <token>" },
      }),
    );
    const head = Buffer.alloc(5);
    head.writeUInt8(2, 0);
    head.writeUInt32BE(end.length, 1);
    await page.route("**/fermilink.runner.v1.RunService/Run", (route) =>
      route.fulfill({
        status: 200,
        contentType: "application/connect+json",
        body: Buffer.concat([head, end]),
      }),
    );
    await page.route("**/fermilink.runner.v1.RunService/ListRuns", (route) =>
      route.fulfill(connectError(403, "permission_denied", "that token is user alice's")),
    );
    await page.fill("#prompt", "refused");
    await page.click("#start");
    await page.locator("#status", { hasText: "token" }).waitFor();
    expect(await page.locator("#status").textContent()).toBe(
      "The runner needs a token: send Authorization: Bearer <token> (enter it in the Token field)",
    );
    expect(await page.isEnabled("#start")).toBe(true);
    await page.locator("#runs-status", { hasText: "token" }).waitFor();
    expect(await page.locator("#runs-status").textContent()).toBe(
      "Run list unavailable: The token does not allow this: that token is user alice's",
    );
    await page.close();
  });

  it("says so when the connection drops in the middle of a run", async () => {
    const gated = await startGatedTestServer();
    server = gated;
    // The page reaches the runner through a TCP relay whose connections the test cuts.
    const sockets = new Set<net.Socket>();
    const relay = net.createServer((client) => {
      const upstream = net.connect(gated.app.port, "127.0.0.1");
      for (const s of [client, upstream]) {
        sockets.add(s);
        s.on("close", () => sockets.delete(s));
        s.on("error", () => {});
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((r) => relay.listen(0, "127.0.0.1", r));
    try {
      const page = await openApp(`http://127.0.0.1:${(relay.address() as AddressInfo).port}/`);
      await page.fill("#prompt", "#scenario=gate drop me");
      await page.check("#detach");
      await page.click("#start");
      await page.locator(".ev-meta").waitFor();
      for (const s of sockets) s.destroy();
      await page.locator("#status", { hasNotText: "Running" }).waitFor();
      const status = (await page.locator("#status").textContent()) ?? "";
      expect(status).toMatch(/^The stream ended without the run's result \([A-Za-z]+: .+\)\. /);
      expect(status).toContain("The run goes on: Re-attach follows it.");
      expect(await page.isEnabled("#start")).toBe(true);
      // A re-attach that fails at once (still no connection) can be tried again.
      await page.route("**/fermilink.runner.v1.RunService/Attach", (route) => route.abort());
      const attachFailed = page.waitForEvent("requestfailed", (r) => r.url().endsWith("/Attach"));
      await page.click("#reattach");
      await attachFailed;
      await page.locator("#reattach").waitFor({ state: "visible", timeout: 5000 });
      expect(await page.locator("#status").textContent()).toMatch(
        /^The stream ended without the run's result \([A-Za-z]+: .+\)\. The run goes on/,
      );
      await page.unroute("**/fermilink.runner.v1.RunService/Attach");
      // Re-attach continues after the events shown: the view keeps them, none comes twice.
      await page.click("#reattach");
      await page.locator("#status", { hasText: "Running…" }).waitFor();
      expect(await page.isHidden("#reattach")).toBe(true);
      await gated.openGate();
      const exit = page.locator(".ev-exit");
      await exit.waitFor();
      expect(await exit.getAttribute("data-reason")).toBe("completed");
      expect(await page.locator(".ev-meta").count()).toBe(1);
      expect(await page.locator(".ev-message").allTextContents()).toEqual([
        "#scenario=gate drop me",
      ]);
      expect(await page.locator("#status").textContent()).toBe("Ended: completed");
      await page.close();
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((r) => relay.close(r));
      await gated.openGate();
    }
  });

  it("says a stream that ends cleanly without the exit event ended without the run's result", async () => {
    server = await startTestServer();
    const page = await openApp(`${server.baseUrl}/`);
    // A Connect stream of one meta event and a clean end: no exit event, no error.
    const frame = (flags: number, json: string) => {
      const body = Buffer.from(json);
      const head = Buffer.alloc(5);
      head.writeUInt8(flags, 0);
      head.writeUInt32BE(body.length, 1);
      return Buffer.concat([head, body]);
    };
    await page.route("**/fermilink.runner.v1.RunService/Run", (route) =>
      route.fulfill({
        status: 200,
        contentType: "application/connect+json",
        body: Buffer.concat([
          frame(0, JSON.stringify({ runId: "r-cut", seq: "1", meta: { sessionId: "s-cut" } })),
          frame(2, "{}"),
        ]),
      }),
    );
    await page.fill("#prompt", "cut short");
    await page.click("#start");
    await page.locator(".ev-meta").waitFor();
    await page.locator("#status", { hasNotText: "Running" }).waitFor();
    expect(await page.locator("#status").textContent()).toBe(
      "The stream ended without the run's result. Without detach the run ends when its caller is gone: Re-attach shows how it ended.",
    );
    expect(await page.isVisible("#reattach")).toBe(true);
    await page.close();
  });

  it("keeps a run's outcome in the status line when the run list then fails to load", async () => {
    server = await startTestServer();
    const page = await openApp(`${server.baseUrl}/`);
    await page.route("**/fermilink.runner.v1.RunService/ListRuns", (route) =>
      route.fulfill(connectError(503, "unavailable", "list down")),
    );
    await page.fill("#prompt", "list fails after me");
    await page.click("#start");
    // The listing the run's end sets off (the page's first one was sent before the click).
    const listing = await page.waitForRequest((r) => r.url().endsWith("/ListRuns"));
    await listing.response();
    await page.evaluate(() => new Promise((r) => setTimeout(r, 100)));
    expect(await page.locator("#status").textContent()).toBe("Ended: completed");
    expect(await page.locator("#runs-status").textContent()).toBe(
      "Run list unavailable: Unavailable: list down",
    );
    // A listing that works again clears the note.
    await page.unroute("**/fermilink.runner.v1.RunService/ListRuns");
    await page.click("#refresh-runs");
    await page.locator("#runs li", { hasText: "list fails after me" }).waitFor();
    expect(await page.locator("#runs-status").textContent()).toBe("");
    await page.close();
  });

  it("shows a failed package list by the package field, never over a run's outcome", async () => {
    server = await startTestServer();
    const page = await browser.newPage();
    // The page's package listing is held until a run has ended, then fails.
    let release!: () => void;
    const released = new Promise<void>((r) => {
      release = r;
    });
    let failed!: () => void;
    const answered = new Promise<void>((r) => {
      failed = r;
    });
    await page.route("**/fermilink.runner.v1.PackageService/ListPackages", async (route) => {
      await released;
      await route.fulfill(connectError(503, "unavailable", "packages down"));
      failed();
    });
    await page.goto(`${server.baseUrl}/`);
    await page.fill("#prompt", "packages fail after me");
    await page.click("#start");
    await page.locator("#status", { hasText: "Ended: completed" }).waitFor();
    release();
    await answered;
    await page.evaluate(() => new Promise((r) => setTimeout(r, 100)));
    expect(await page.locator("#status").textContent()).toBe("Ended: completed");
    expect(await page.locator("#packages-status").textContent()).toBe(
      "Packages unavailable: Unavailable: packages down",
    );
    await page.close();
  });

  it("says a replayed run is replaying until its exit, never that it is running", async () => {
    server = await startTestServer();
    const page = await openApp(`${server.baseUrl}/`);
    await page.fill("#prompt", "replay me");
    await page.click("#start");
    await page.locator(".ev-exit").waitFor();
    const row = page.locator("#runs li", { hasText: "replay me" });
    await row.waitFor();
    const runId = await row.getAttribute("data-run-id");
    const shown = await recordStatus(page);
    // A finished run cannot be cancelled: Cancel never comes on while it replays.
    await page.evaluate(`(() => {
      const cancel = document.getElementById("cancel");
      const seen = (window.__cancelEnabled = []);
      new MutationObserver(() => seen.push(!cancel.disabled)).observe(cancel, {
        attributes: true,
        attributeFilter: ["disabled"],
      });
    })()`);
    await row.locator("button", { hasText: "Replay" }).click();
    await page.waitForFunction("window.__statusShown.at(-1) === 'Ended: completed'");
    expect(await shown()).toEqual([`Replaying ${runId}…`, "Ended: completed"]);
    expect(await page.evaluate("window.__cancelEnabled")).not.toContain(true);
    expect(await page.locator(".ev-message").allTextContents()).toEqual(["replay me"]);
    await page.close();
  });

  it("shows a queued run's place in line, then Running… once it starts", async () => {
    const gated = await startGatedTestServer();
    server = gated;
    const page = await openApp(`${server.baseUrl}/`);
    // A detached run holds session q (left by a reload); the next run on q waits for it.
    await page.fill("#session", "q");
    await page.fill("#prompt", "#scenario=gate holds the session");
    await page.check("#detach");
    await page.click("#start");
    await page.locator(".ev-meta").waitFor();
    await page.reload();
    const shown = await recordStatus(page);
    await page.fill("#session", "q");
    await page.fill("#prompt", "second in line");
    await page.click("#start");
    await page.locator(".ev-queued").waitFor();
    expect(await page.locator("#status").textContent()).toBe("Queued: 1 of 1 in line…");
    await gated.openGate();
    await page.locator(".ev-exit").waitFor();
    // Consecutive repeats collapsed: a wait for a slot and then for the session may both say 1 of 1.
    const steps = (await shown()).filter((t, i, all) => t !== all[i - 1]);
    expect(steps).toEqual(["Starting…", "Queued: 1 of 1 in line…", "Running…", "Ended: completed"]);
    expect(await page.locator(".ev-message").allTextContents()).toEqual(["second in line"]);
    await page.close();
  });

  it("lists each run with its date and time", async () => {
    server = await startTestServer();
    // A fixed locale and zone, so the shown text can be read back into an instant.
    const page = await browser.newPage({ locale: "en-US", timezoneId: "UTC" });
    await page.goto(`${server.baseUrl}/`);
    const before = Date.now();
    await page.fill("#prompt", "dated run");
    await page.click("#start");
    const row = page.locator("#runs li", { hasText: "dated run" });
    await row.waitFor();
    const after = Date.now();
    const label = (await row.locator("span").first().textContent()) ?? "";
    const m = /^(\d{1,2})\/(\d{1,2})\/(\d{4}), (\d{1,2}):(\d{2}):(\d{2})\s([AP]M) · /.exec(label);
    expect(m, label).not.toBeNull();
    const [, month, day, year, hour, minute, second, half] = (m ?? []).map(String);
    const at = Date.UTC(
      Number(year),
      Number(month) - 1,
      Number(day),
      (Number(hour) % 12) + (half === "PM" ? 12 : 0),
      Number(minute),
      Number(second),
    );
    // Shown to the second: the run was created between the click and the listing.
    expect(at).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000);
    expect(at).toBeLessThanOrEqual(after);
    await page.close();
  });

  it("replays a listed run as the user it was listed for, even if the User field changed since", async () => {
    server = await startTestServer();
    const page = await openApp(`${server.baseUrl}/`);
    await page.fill("#user", "ann");
    await page.locator("#user").blur();
    await page.fill("#prompt", "ann's secret run");
    await page.click("#start");
    await page.locator(".ev-exit").waitFor();
    const replay = page.locator("#runs li", { hasText: "ann's secret run" }).locator("button");
    await replay.waitFor();
    // Bob's listing (set off by leaving the field for the button) is held: ann's row stays.
    await page.route("**/fermilink.runner.v1.RunService/ListRuns", () => {});
    await page.fill("#user", "bob");
    await replay.click();
    await page.locator("#status", { hasNotText: /^(Watching|Replaying|Running)/ }).waitFor();
    expect(await page.locator("#status").textContent()).toBe("Ended: completed");
    expect(await page.locator(".ev-message").allTextContents()).toEqual(["ann's secret run"]);
    await page.close();
  });
});

describe("the browser app's static files", () => {
  /** A raw request: fetch would resolve dot segments before sending. */
  function get(port: number, target: string) {
    return new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }>(
      (resolve, reject) => {
        const req = http.request({ host: "127.0.0.1", port, path: target }, (res) => {
          let body = "";
          res.setEncoding("utf8");
          res.on("data", (c: string) => {
            body += c;
          });
          res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        });
        req.on("error", reject);
        req.end();
      },
    );
  }

  it("serves the app with its type, no-cache, nosniff and a CSP that forbids framing", async () => {
    server = await startTestServer();
    const port = Number(new URL(server.baseUrl).port);
    for (const [target, type] of [
      ["/", "text/html; charset=utf-8"],
      ["/index.html", "text/html; charset=utf-8"],
      ["/app.js", "text/javascript; charset=utf-8"],
      ["/style.css", "text/css; charset=utf-8"],
    ] as const) {
      const res = await get(port, target);
      expect({ target, status: res.status, type: res.headers["content-type"] }).toEqual({
        target,
        status: 200,
        type,
      });
      expect(res.headers["cache-control"]).toBe("no-cache");
      expect(res.headers["x-content-type-options"]).toBe("nosniff");
      const csp = String(res.headers["content-security-policy"]);
      expect(csp).toContain("script-src 'self'");
      // Calls go only where the app's `?runner=` rule lets them: this runner or one on localhost.
      expect(csp).toContain(
        "connect-src 'self' http://localhost:* http://127.0.0.1:* https://localhost:* https://127.0.0.1:*;",
      );
      expect(csp).toContain("frame-ancestors 'none'");
      expect(csp).toContain("object-src 'none'");
      expect(csp).toContain("base-uri 'none'");
    }
  });

  it("serves only its four files: no path reaches another file", async () => {
    server = await startTestServer();
    const port = Number(new URL(server.baseUrl).port);
    for (const target of [
      "/../package.json",
      "/..%2fpackage.json",
      "/%2e%2e/package.json",
      "/app.js/../../package.json",
      "//etc/passwd",
      "/dist/app.js",
      "/src/main.ts",
      "/web/index.html",
      "/index.html/",
      "/app.js%00",
      "/.%2e/.%2e/etc/passwd",
      "/..\\package.json",
    ]) {
      const res = await get(port, target);
      expect({ target, status: res.status }).toEqual({ target, status: 404 });
      expect(res.body).not.toContain("fermilink-runner");
    }
  });
});

run("the browser app's package list and token field", () => {
  it("offers to retry a failed package list, by its button or when the field is opened", async () => {
    server = await startTestServer();
    await writePackageRoot(path.join(server.home, "scientific_packages"), {
      meep: { files: { "docs/x.md": "" } },
    });
    const page = await browser.newPage();
    const down = (route: { fulfill(r: object): Promise<void> }) =>
      route.fulfill(connectError(503, "unavailable", "packages down"));
    const LIST = "**/fermilink.runner.v1.PackageService/ListPackages";
    await page.route(LIST, down);
    await page.goto(`${server.baseUrl}/`);
    await page.locator("#packages-status", { hasText: "packages down" }).waitFor();
    await page.locator("#packages-retry").waitFor({ state: "visible" });
    await page.unroute(LIST);
    await page.click("#packages-retry");
    await page.locator("#package option[value=meep]").waitFor({ state: "attached" });
    expect(await page.locator("#packages-status").textContent()).toBe("");
    expect(await page.isHidden("#packages-retry")).toBe(true);
    // Failed again (a token change reloads it); opening the field asks once more.
    await page.route(LIST, down);
    await page.fill("#token", "changed-token");
    await page.locator("#token").blur();
    await page.locator("#packages-status", { hasText: "packages down" }).waitFor();
    await page.unroute(LIST);
    const asked = page.waitForRequest((r) => r.url().endsWith("/ListPackages"));
    await page.focus("#package");
    await (await asked).response();
    await page.waitForFunction(`document.getElementById("packages-status").textContent === ""`);
    expect(await page.isHidden("#packages-retry")).toBe(true);
    expect(await page.locator("#package option[value=meep]").count()).toBe(1);
    await page.close();
  });

  it("says plainly that a token with characters beyond Latin-1 cannot be sent", async () => {
    server = await startTestServer();
    const page = await openApp(`${server.baseUrl}/`);
    const sent: string[] = [];
    page.on("request", (r) => sent.push(r.url()));
    // A dash a word processor made of "-": fetch refuses it in a header.
    await page.fill("#token", "tok—0123456789abcdef");
    await page.fill("#prompt", "never sent");
    await page.click("#start");
    await page.locator("#status", { hasText: "token" }).waitFor();
    const said =
      "The token in the Token field has characters an HTTP header cannot carry (only Latin-1 ones can be sent): check that it was copied whole, without typographic quotes or dashes";
    expect(await page.locator("#status").textContent()).toBe(said);
    expect(await page.isEnabled("#start")).toBe(true);
    await page.locator("#runs-status", { hasText: "token" }).waitFor();
    expect(await page.locator("#runs-status").textContent()).toBe(`Run list unavailable: ${said}`);
    expect(sent.filter((u) => u.includes("/fermilink.runner.v1."))).toEqual([]);
    // Latin-1 beyond ASCII can be sent: such a token reaches the runner.
    await page.fill("#token", "tök-0123456789abcdef");
    await page.fill("#prompt", "sent");
    await page.click("#start");
    await page.locator("#status", { hasText: "Ended: completed" }).waitFor();
    await page.close();
  });
});
