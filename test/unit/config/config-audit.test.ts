import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ENV_SPECS } from "../../../src/config/env-spec.js";
import { type ConfigError, loadConfig } from "../../../src/config/load-config.js";

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A fresh FERMILINK_HOME, so the checks on the paths under it see a clean tree. */
function home(): string {
  const dir = mkdtempSync(path.join(tmpdir(), "flr-config-audit-"));
  dirs.push(dir);
  return dir;
}

/** The problems `env` makes (empty when it loads). */
function problems(env: Record<string, string>): readonly string[] {
  try {
    loadConfig({ FERMILINK_HOME: home(), ...env });
    return [];
  } catch (err) {
    return (err as ConfigError).problems;
  }
}

describe("FERMILINK_RUNNER_SPAWN_HELPER", () => {
  it("takes a switch spelled as FermiLink's boolean settings are, in any case", () => {
    for (const on of ["1", "true", "TRUE", "Yes", "on", " On "])
      expect(loadConfig({ FERMILINK_RUNNER_SPAWN_HELPER: on }).run.spawnHelper).toBe(true);
    for (const off of ["0", "false", "False", "NO", "off", "OFF"])
      expect(loadConfig({ FERMILINK_RUNNER_SPAWN_HELPER: off }).run.spawnHelper).toBe(false);
    expect(loadConfig({ FERMILINK_RUNNER_SPAWN_HELPER: " " }).run.spawnHelper).toBe(true);
  });

  it("refuses anything else, saying what is allowed", () => {
    for (const bad of ["2", "enabled", "-1", "1.0"]) {
      expect(problems({ FERMILINK_RUNNER_SPAWN_HELPER: bad })).toEqual([
        `FERMILINK_RUNNER_SPAWN_HELPER=${JSON.stringify(bad)} must be 1 or 0 (also true/false, yes/no, on/off).`,
      ]);
    }
  });
});

describe("FERMILINK_RUNNER_RUN_RETENTION_HOURS", () => {
  it("is rounded in milliseconds, not in hours: a small positive value is not 0", () => {
    // 0.0004 h = 1.44 s; rounding 0.4 (thousandths of an hour) first made it 0, then refused.
    expect(loadConfig({ FERMILINK_RUNNER_RUN_RETENTION_HOURS: "0.0004" }).store.retentionMs).toBe(
      1440,
    );
    expect(loadConfig({ FERMILINK_RUNNER_RUN_RETENTION_HOURS: "0.0006" }).store.retentionMs).toBe(
      2160,
    );
    expect(loadConfig({ FERMILINK_RUNNER_RUN_RETENTION_HOURS: "1.5" }).store.retentionMs).toBe(
      5_400_000,
    );
    // Below half a millisecond it is 0, which is refused.
    expect(problems({ FERMILINK_RUNNER_RUN_RETENTION_HOURS: "0.0000001" })).toEqual([
      'FERMILINK_RUNNER_RUN_RETENTION_HOURS="0.0000001" must be a decimal number of hours > 0.',
    ]);
  });
});

describe("the main and metrics ports", () => {
  it("stop start-up when both listeners would take one port on overlapping addresses", () => {
    const clash =
      "FERMILINK_RUNNER_PORT and FERMILINK_RUNNER_METRICS_PORT are both 9464 (FERMILINK_RUNNER_HOST=127.0.0.1, FERMILINK_RUNNER_METRICS_HOST=127.0.0.1): the main and metrics listeners each need a port of their own, or addresses apart.";
    // The metrics port's default is the port asked for.
    expect(problems({ FERMILINK_RUNNER_PORT: "9464" })).toEqual([clash]);
    expect(
      problems({ FERMILINK_RUNNER_PORT: "8000", FERMILINK_RUNNER_METRICS_PORT: "8000" })[0],
    ).toMatch(/^FERMILINK_RUNNER_PORT and FERMILINK_RUNNER_METRICS_PORT are both 8000 /);
    // Every interface includes the loopback one.
    expect(
      problems({
        FERMILINK_RUNNER_PORT: "8000",
        FERMILINK_RUNNER_METRICS_PORT: "8000",
        FERMILINK_RUNNER_HOST: "0.0.0.0",
      }),
    ).toHaveLength(1);
    expect(
      problems({
        FERMILINK_RUNNER_PORT: "8000",
        FERMILINK_RUNNER_METRICS_PORT: "8000",
        FERMILINK_RUNNER_METRICS_HOST: "::",
      }),
    ).toHaveLength(1);
  });

  it("allow one port on two distinct addresses, and 0 (any free port) for both", () => {
    expect(
      problems({
        FERMILINK_RUNNER_PORT: "8000",
        FERMILINK_RUNNER_METRICS_PORT: "8000",
        FERMILINK_RUNNER_METRICS_HOST: "127.0.0.2",
      }),
    ).toEqual([]);
    expect(problems({ FERMILINK_RUNNER_PORT: "0", FERMILINK_RUNNER_METRICS_PORT: "0" })).toEqual(
      [],
    );
    // A refused port is named alone, not also as clashing through the default taking its place.
    expect(
      problems({ FERMILINK_RUNNER_PORT: "abc", FERMILINK_RUNNER_METRICS_PORT: "8000" }),
    ).toEqual(['FERMILINK_RUNNER_PORT="abc" is not an integer.']);
  });
});

describe("the package registry root", () => {
  it("stops start-up when it is a file, naming the variable that set it", () => {
    const dir = home();
    const file = path.join(dir, "a-file");
    writeFileSync(file, "");
    expect(problems({ FERMILINK_SCIPKG_ROOT: file })).toEqual([
      `FERMILINK_SCIPKG_ROOT: ${file} is not a directory.`,
    ]);
    expect(problems({ FERMILINK_SCIENTIFIC_PACKAGES_ROOT: path.join(file, "pk") })).toEqual([
      `FERMILINK_SCIENTIFIC_PACKAGES_ROOT: ${path.join(file, "pk")} cannot be made: ${file} is not a directory.`,
    ]);
    // Missing is fine: no packages yet.
    expect(problems({ FERMILINK_SCIPKG_ROOT: path.join(dir, "not-yet") })).toEqual([]);
  });
});

describe("the README's configuration table", () => {
  /** Its rows of FERMILINK_* variables: name and the default cell's first `code`, or "unset". */
  async function readmeRows(): Promise<{ name: string; default: string | null }[]> {
    const readme = await readFile(new URL("../../../README.md", import.meta.url), "utf8");
    const rows: { name: string; default: string | null }[] = [];
    for (const line of readme.split("\n")) {
      const m = /^\| `(FERMILINK_[A-Z0-9_]+)` +\| (.*?) +\|/.exec(line);
      if (!m?.[1] || m[2] === undefined) continue;
      const def = m[2] === "unset" ? null : (/^`([^`]*)`/.exec(m[2])?.[1] ?? m[2]);
      rows.push({ name: m[1], default: def });
    }
    return rows;
  }

  it("lists the variables of env-spec.ts, no others, in its order and with its defaults", async () => {
    const rows = await readmeRows();
    expect(rows.map((r) => r.name)).toEqual(ENV_SPECS.map((s) => s.name));
    expect(rows).toEqual(ENV_SPECS.map((s) => ({ name: s.name, default: s.default })));
  });
});
