import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { type Browser, chromium } from "playwright-core";

/** Debian's Chromium (installed by .ci/run); tests never download a browser. */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

export const chromiumAvailable = existsSync(CHROMIUM_PATH);

/** Starts CHROMIUM_PATH with the per-window features no test needs turned off (see the script). */
const LEAN_LAUNCHER = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  "../fixtures/bin/chromium-lean.sh",
);

/** Headless Chromium with the flags this closed network needs (no background traffic). */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: LEAN_LAUNCHER,
    env: { ...process.env, FLR_CHROMIUM: CHROMIUM_PATH },
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-dev-shm-usage",
    ],
  });
}
