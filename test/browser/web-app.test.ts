import { mkdir } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
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
});
