#!/usr/bin/env -S node --min-semi-space-size=16
// The `fermilink-runner` command: the build in dist/ (`npm ci` makes it, through the `prepare`
// script; `npm run build` or `npm start` makes it again after a change to the sources).
import { existsSync } from "node:fs";

const main = new URL("../dist/src/cli/main.js", import.meta.url);
if (!existsSync(main)) {
  process.stderr.write(
    "fermilink-runner: dist/ is missing: run `npm run build` in the checkout first.\n",
  );
  process.exit(1);
}
await import(main.href);
