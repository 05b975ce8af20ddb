/**
 * opencode's read-only runs inside bubblewrap: which commands are wrapped,
 * and what the sandbox lets write (the argv only; read-only-sandbox.test.ts
 * runs it for real).
 */
import { describe, expect, it } from "vitest";
import { PROVIDER_IDS } from "../../../src/config/providers.js";
import type { AgentPolicy } from "../../../src/events/run-event.js";
import type { BuildCommandInput } from "../../../src/providers/provider-adapter.js";
import { bwrapForRun } from "../../../src/providers/read-only-sandbox.js";
import { getProviderAdapter } from "../../../src/providers/registry.js";

const BIN = "/opt/clis/bin/opencode";
const BWRAP = "/usr/bin/bwrap";
const SESSION = "/srv/ws/s1";
const REPO = `${SESSION}/repo`;
const HOME = `${SESSION}/.opencode-home`;
const TMP = `${SESSION}/.tmp`;

function policy(mode: "read-only" | "workspace-write" | "bypass"): AgentPolicy {
  return mode === "bypass"
    ? {
        provider: "x",
        sandboxPolicy: "bypass",
        sandboxMode: null,
        model: null,
        reasoningEffort: null,
      }
    : {
        provider: "x",
        sandboxPolicy: "enforce",
        sandboxMode: mode,
        model: null,
        reasoningEffort: null,
      };
}

function input(p: AgentPolicy, extra: Partial<BuildCommandInput> = {}): BuildCommandInput {
  return {
    bin: BIN,
    repoDir: REPO,
    prompt: "hello world",
    policy: p,
    hostEnv: { PATH: "/usr/bin:/bin", TMPDIR: "/var/tmp" },
    envPassthrough: [],
    runDir: SESSION,
    bwrap: BWRAP,
    ...extra,
  };
}

const opencode = getProviderAdapter("opencode");

/** The `--<flag> src dest` pairs of a bwrap argv before its `--`. */
function binds(args: string[], flag: string): [string, string][] {
  const options = args.slice(0, args.indexOf("--"));
  const out: [string, string][] = [];
  options.forEach((a, i) => {
    if (a === flag) out.push([options[i + 1] as string, options[i + 2] as string]);
  });
  return out;
}

describe("opencode read-only command under bubblewrap", () => {
  it("execs bwrap, which execs opencode with the unwrapped arguments after --", () => {
    const wrapped = opencode.buildCommand(input(policy("read-only")));
    const plain = opencode.buildCommand(input(policy("read-only"), { bwrap: null }));
    expect(wrapped.bin).toBe(BWRAP);
    const end = wrapped.args.indexOf("--");
    expect(wrapped.args.slice(end + 1)).toEqual([BIN, ...plain.args]);
    expect(plain.args).toContain("plan");
  });

  it("binds everything read-only, and only the session's opencode home and temp dir writable", () => {
    const spec = opencode.buildCommand(input(policy("read-only")));
    expect(binds(spec.args, "--ro-bind")).toEqual([["/", "/"]]);
    expect(binds(spec.args, "--bind")).toEqual([
      [HOME, HOME],
      [TMP, TMP],
    ]);
    expect(binds(spec.args, "--dev-bind")).toEqual([]);
    // The host's TMPDIR is not writable in there: opencode gets the session's, created first.
    expect(spec.env.TMPDIR).toBe(TMP);
    expect(spec.env.HOME).toBe(HOME);
    expect(spec.dirs).toEqual([HOME, TMP]);
  });

  it("keeps the network, the pid namespace and the process group, and drops every capability", () => {
    const options = opencode.buildCommand(input(policy("read-only"))).args;
    const flags = options.slice(0, options.indexOf("--"));
    for (const kept of ["--unshare-net", "--unshare-pid", "--unshare-all", "--new-session"])
      expect(flags).not.toContain(kept);
    expect(flags).toContain("--die-with-parent");
    expect(flags).toContain("--unshare-user");
    expect(flags.join(" ")).toContain("--cap-drop ALL");
  });

  it("keeps opencode from installing its plugin package into the session home's config dir", () => {
    const configDir = `${HOME}/.config/opencode`;
    for (const spec of [
      opencode.buildCommand(input(policy("read-only"))),
      opencode.buildCommand(input(policy("workspace-write"))),
      opencode.buildCommand(input(policy("bypass"))),
    ]) {
      expect(spec.env.XDG_CONFIG_HOME).toBe(`${HOME}/.config`);
      const files = new Map(spec.files?.map((f) => [f.path, f.content]));
      expect([...files.keys()].sort()).toEqual([
        `${configDir}/.npmrc`,
        `${configDir}/node_modules/.package-lock.json`,
        `${configDir}/package-lock.json`,
      ]);
      expect(files.get(`${configDir}/.npmrc`)).toBe("offline=true\n");
      // What opencode 1.18 reads to decide: node_modules there, and the package in the lock's root.
      const lock = JSON.parse(files.get(`${configDir}/package-lock.json`) ?? "{}");
      expect(Object.keys(lock.packages[""].dependencies)).toEqual(["@opencode-ai/plugin"]);
    }
    // No session home (not sandboxed, no runDir): opencode keeps the host's config dir, untouched.
    const bare = opencode.buildCommand(input(policy("workspace-write"), { runDir: undefined }));
    expect(bare.files).toBeUndefined();
    expect(bare.env.XDG_CONFIG_HOME).toBeUndefined();
  });

  it("uses the repo's parent as the session dir when no runDir is given", () => {
    const spec = opencode.buildCommand(input(policy("read-only"), { runDir: undefined }));
    expect(binds(spec.args, "--bind").map(([src]) => src)).toEqual([HOME, TMP]);
  });

  it("wraps neither workspace-write nor bypass runs, nor a read-only run without a bwrap", () => {
    for (const spec of [
      opencode.buildCommand(input(policy("workspace-write"))),
      opencode.buildCommand(input(policy("bypass"))),
      opencode.buildCommand(input(policy("read-only"), { bwrap: null })),
      opencode.buildCommand(input(policy("read-only"), { bwrap: undefined })),
    ]) {
      expect(spec.bin).toBe(BIN);
      expect(spec.args[0]).toBe("run");
      // The host's TMPDIR passes as before (the runner sets the session's only when none is set).
      expect(spec.env.TMPDIR).toBe("/var/tmp");
    }
  });

  it("wraps no other provider, even in read-only with a bwrap offered", () => {
    for (const id of PROVIDER_IDS.filter((p) => p !== "opencode")) {
      const spec = getProviderAdapter(id).buildCommand(input(policy("read-only")));
      expect(spec.bin, id).toBe(BIN);
    }
  });
});

describe("bwrapForRun", () => {
  const silent = { warn: () => undefined };

  it("looks for a bwrap only for a read-only run of an adapter that needs one", async () => {
    const path = process.env.PATH ?? "";
    expect(await bwrapForRun(getProviderAdapter("codex"), policy("read-only"), path, silent)).toBe(
      null,
    );
    for (const mode of ["workspace-write", "bypass"] as const)
      expect(await bwrapForRun(opencode, policy(mode), path, silent)).toBe(null);
  });
});
