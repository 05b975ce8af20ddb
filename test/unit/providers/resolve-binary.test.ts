/** Binary resolution (spec §6.1, §1.0) against real temporary files. */
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { RunnerError } from "../../../src/errors/runner-error.js";
import { codexAdapter } from "../../../src/providers/codex/index.js";
import { opencodeAdapter } from "../../../src/providers/opencode/index.js";
import { resolveProviderBinary } from "../../../src/providers/resolve-binary.js";

let root: string;
let projectBin: string;
let pathA: string;
let pathB: string;

async function makeFile(file: string, mode: number): Promise<string> {
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, "#!/bin/sh\nexit 0\n");
  await chmod(file, mode);
  return file;
}

async function refusal(p: Promise<unknown>): Promise<RunnerError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof RunnerError) return err;
    throw err;
  }
  throw new Error("expected a RunnerError");
}

beforeEach(async () => {
  root = await mkdtemp(path.join(tmpdir(), "resolve-bin-"));
  projectBin = path.join(root, "node_modules", ".bin");
  pathA = path.join(root, "a");
  pathB = path.join(root, "b");
  await mkdir(pathA, { recursive: true });
  await mkdir(pathB, { recursive: true });
});

afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

const opts = () => ({ projectBinDir: projectBin, pathEnv: [pathA, pathB].join(path.delimiter) });

describe("resolveProviderBinary", () => {
  it("prefers the project's node_modules/.bin over PATH when nothing is configured", async () => {
    const local = await makeFile(path.join(projectBin, "codex"), 0o755);
    await makeFile(path.join(pathA, "codex"), 0o755);
    expect(await resolveProviderBinary(codexAdapter, null, opts())).toBe(local);
  });

  it("finds opencode's platform package binary when no .bin link exists, before PATH", async () => {
    const pkg = await makeFile(
      path.join(root, "node_modules", "opencode-linux-x64", "bin", "opencode"),
      0o755,
    );
    await makeFile(path.join(pathA, "opencode"), 0o755);
    expect(await resolveProviderBinary(opencodeAdapter, null, opts())).toBe(pkg);
    // A configured value still wins, and a .bin link comes first.
    const link = await makeFile(path.join(projectBin, "opencode"), 0o755);
    expect(await resolveProviderBinary(opencodeAdapter, null, opts())).toBe(link);
    expect(await resolveProviderBinary(opencodeAdapter, "opencode", opts())).toBe(
      path.join(pathA, "opencode"),
    );
  });

  it("falls back to PATH, skipping a directory and a non-executable file", async () => {
    await mkdir(path.join(projectBin, "codex"), { recursive: true });
    await makeFile(path.join(pathA, "codex"), 0o644);
    const onPath = await makeFile(path.join(pathB, "codex"), 0o755);
    expect(await resolveProviderBinary(codexAdapter, "  ", opts())).toBe(onPath);
  });

  it("a configured absolute path wins, even over node_modules/.bin", async () => {
    await makeFile(path.join(projectBin, "codex"), 0o755);
    const configured = await makeFile(path.join(root, "custom", "my-codex"), 0o755);
    expect(await resolveProviderBinary(codexAdapter, configured, opts())).toBe(configured);
  });

  it("a configured relative path is resolved against the CWD", async () => {
    const configured = await makeFile(path.join(root, "rel", "codex-rel"), 0o755);
    const relative = path.relative(process.cwd(), configured);
    expect(relative.includes(path.sep)).toBe(true);
    expect(await resolveProviderBinary(codexAdapter, relative, opts())).toBe(configured);
  });

  it("a configured bare name is searched on PATH only", async () => {
    await makeFile(path.join(projectBin, "codex-nightly"), 0o755);
    const onPath = await makeFile(path.join(pathB, "codex-nightly"), 0o755);
    expect(await resolveProviderBinary(codexAdapter, "codex-nightly", opts())).toBe(onPath);
  });

  it("refuses a configured file that is not executable, with FermiLink's message and the reason", async () => {
    const configured = await makeFile(path.join(root, "custom", "codex"), 0o644);
    const err = await refusal(resolveProviderBinary(codexAdapter, configured, opts()));
    expect(err.code).toBe("PROVIDER_BINARY_MISSING");
    expect(err.message).toBe(
      `codex CLI not found. Install it in the runner image or set FERMILINK_CODEX_BIN to its path. Tried: ${configured} (not executable).`,
    );
  });

  it("lists everything it tried when the CLI is missing, skipping empty and relative PATH entries", async () => {
    const pathEnv = ["", "relative/bin", pathA].join(path.delimiter);
    const err = await refusal(
      resolveProviderBinary(codexAdapter, null, { projectBinDir: projectBin, pathEnv }),
    );
    expect(err.code).toBe("PROVIDER_BINARY_MISSING");
    expect(err.message).toBe(
      "codex CLI not found. Install it in the runner image or set FERMILINK_CODEX_BIN to its path. " +
        `Tried: ${path.join(projectBin, "codex")} (missing), ${path.join(pathA, "codex")} (missing).`,
    );
  });

  it("says so when a configured bare name meets an empty PATH", async () => {
    const err = await refusal(
      resolveProviderBinary(codexAdapter, "codex", { projectBinDir: projectBin, pathEnv: "" }),
    );
    expect(err.message).toMatch(/Tried: nothing \(PATH is empty\)\.$/);
  });
});
