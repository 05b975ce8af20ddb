import { rmSync } from "node:fs";
import {
  lstat,
  mkdir,
  mkdtemp,
  readFile,
  readlink,
  realpath,
  rm,
  symlink,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { overlayPackage } from "../../../src/packages/overlay.js";
import { readRegistryFile } from "../../../src/packages/registry.js";
import { type TestPackage, writePackageRoot } from "../../helpers/package-tree.js";

let tmp: string;
let scipkg: string;
let sessionDir: string;
let repoDir: string;

beforeEach(async () => {
  tmp = await realpath(await mkdtemp(path.join(tmpdir(), "flr-ovl-")));
  scipkg = path.join(tmp, "scipkg");
  sessionDir = path.join(tmp, "ws", "s1");
  repoDir = path.join(sessionDir, "repo");
  await mkdir(repoDir, { recursive: true });
});
afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const exists = async (p: string) => (await lstat(p).catch(() => null)) !== null;
const isLink = async (p: string) => (await lstat(p).catch(() => null))?.isSymbolicLink() ?? false;
const manifest = async () =>
  JSON.parse(await readFile(path.join(sessionDir, ".package_manifest.json"), "utf8")) as Record<
    string,
    unknown
  >;

async function install(packages: Record<string, TestPackage>) {
  return writePackageRoot(scipkg, packages);
}

async function overlay(id: string, allowReplaceExisting = false) {
  const registry = await readRegistryFile(scipkg);
  const meta = registry.packages.get(id);
  if (!meta) throw new Error(`test package ${id} not registered`);
  return overlayPackage({
    sessionDir,
    repoDir,
    packageId: id,
    meta,
    packages: registry.packages,
    allowReplaceExisting,
    now: new Date("2026-11-25T00:00:00Z"),
  });
}

const basePkg: TestPackage = {
  files: {
    "skills/s.md": "skill",
    "docs/d.md": "doc",
    "README.md": "readme",
    "AGENTS.md": "package policy must never win",
    "CLAUDE.md": "alias must never be overlaid",
    ".git/HEAD": "x",
    "node_modules/x.js": "",
    ".hidden": "",
  },
};

describe("overlay (spec §5.4)", () => {
  it("links every exportable entry as an absolute symlink and reports FermiLink's summary", async () => {
    const dirs = await install({ meep: basePkg });
    const summary = await overlay("meep", true);
    const pkgDir = dirs.meep as string;
    expect(summary).toEqual({
      package_id: "meep",
      package_path: pkgDir,
      linked_count: 3,
      collision_count: 0,
      collisions: [],
      requested_entries: null,
      missing_requested_entries: [],
      dependency_package_ids: [],
      linked_dependency_count: 0,
      linked_dependency_packages: [],
      missing_dependency_packages: [],
      dependency_collision_count: 0,
      dependency_collisions: [],
    });
    for (const name of ["README.md", "docs", "skills"]) {
      expect(await readlink(path.join(repoDir, name))).toBe(path.join(pkgDir, name));
    }
    for (const name of ["AGENTS.md", "CLAUDE.md", ".git", "node_modules", ".hidden"]) {
      expect(await exists(path.join(repoDir, name))).toBe(false);
    }
    const m = await manifest();
    expect(Object.keys(m).sort()).toEqual([
      "collisions",
      "configured_dependency_package_ids",
      "dependency_collisions",
      "linked_dependency_packages",
      "linked_entries",
      "missing_dependency_packages",
      "missing_requested_entries",
      "package_id",
      "package_path",
      "requested_entries",
      "updated_at",
      "version",
    ]);
    expect(m.linked_entries).toEqual([
      { name: "README.md", mode: "symlink", source: path.join(pkgDir, "README.md") },
      { name: "docs", mode: "symlink", source: path.join(pkgDir, "docs") },
      { name: "skills", mode: "symlink", source: path.join(pkgDir, "skills") },
    ]);
    // Written as FermiLink writes it: sorted keys, indent 2, trailing newline.
    const text = await readFile(path.join(sessionDir, ".package_manifest.json"), "utf8");
    expect(text.startsWith('{\n  "collisions": []')).toBe(true);
    expect(text.endsWith("}\n")).toBe(true);
  });

  // Mirrors FermiLink's test_overlay_manifest_cleans_stale_entries_and_dependencies.
  it("cleans stale entries and dependencies, then switches package", async () => {
    await install({
      main: {
        files: { "skills/a": "", "docs/b": "" },
        meta: { overlay_entries: ["skills"], dependency_package_ids: ["deppkg"] },
      },
      deppkg: { files: { "lib/x": "" } },
      other: { files: { "tools/t": "" } },
    });
    let s = await overlay("main");
    expect(s.requested_entries).toEqual(["skills"]);
    expect(await isLink(path.join(repoDir, "skills"))).toBe(true);
    expect(await isLink(path.join(repoDir, "docs"))).toBe(false);
    expect(await isLink(path.join(repoDir, "external_packages", "deppkg"))).toBe(true);
    expect(s.linked_dependency_packages).toEqual([
      { package_id: "deppkg", mode: "symlink", source: path.join(scipkg, "packages", "deppkg") },
    ]);

    await install({
      main: { files: { "skills/a": "", "docs/b": "" }, meta: { overlay_entries: ["docs"] } },
      deppkg: { files: { "lib/x": "" } },
      other: { files: { "tools/t": "" } },
    });
    s = await overlay("main");
    expect(await exists(path.join(repoDir, "skills"))).toBe(false);
    expect(await isLink(path.join(repoDir, "docs"))).toBe(true);
    expect(await exists(path.join(repoDir, "external_packages"))).toBe(false);
    expect(s.dependency_package_ids).toEqual([]);

    s = await overlay("other");
    expect(await exists(path.join(repoDir, "docs"))).toBe(false);
    expect(await isLink(path.join(repoDir, "tools"))).toBe(true);
    expect((await manifest()).package_id).toBe("other");
  });

  // Mirrors FermiLink's test_remove_managed_symlinks_removes_copy_mode_entries.
  it("removes entries a previous overlay recorded in copy mode", async () => {
    await install({ a: { files: { "data/x": "" } }, b: { files: { "other/y": "" } } });
    await mkdir(path.join(repoDir, "copied"), { recursive: true });
    await writeFile(path.join(repoDir, "copied", "f"), "copy");
    await writeFile(
      path.join(sessionDir, ".package_manifest.json"),
      JSON.stringify({
        version: 1,
        package_id: "a",
        linked_entries: [{ name: "copied", mode: "copy", source: "/x" }],
      }),
    );
    await overlay("b");
    expect(await exists(path.join(repoDir, "copied"))).toBe(false);
  });

  it("keeps a symlink-mode entry the agent replaced with its own file", async () => {
    await install({ a: { files: { notes: "pkg" } }, b: { files: { other: "" } } });
    await overlay("a");
    await rm(path.join(repoDir, "notes"));
    await writeFile(path.join(repoDir, "notes"), "agent's own");
    await overlay("b");
    expect(await readFile(path.join(repoDir, "notes"), "utf8")).toBe("agent's own");
  });

  it("keeps a dependency link the agent replaced with its own directory, as a top-level entry", async () => {
    await install({
      p: { files: { skills: "" }, meta: { dependency_package_ids: ["dep"] } },
      dep: { files: { x: "" } },
    });
    await overlay("p");
    const dst = path.join(repoDir, "external_packages", "dep");
    await rm(dst);
    await mkdir(dst);
    await writeFile(path.join(dst, "work.txt"), "agent's own");
    const s = await overlay("p");
    expect(await readFile(path.join(dst, "work.txt"), "utf8")).toBe("agent's own");
    expect(s.dependency_collisions).toEqual(["dep"]);
    expect(s.linked_dependency_count).toBe(0);
    // Nor when the dependency is gone from the registry: only a stale link of it would go.
    await writeFile(
      path.join(sessionDir, ".package_manifest.json"),
      JSON.stringify({
        version: 1,
        package_id: "p",
        linked_dependency_packages: [{ package_id: "dep", mode: "symlink", source: "/x" }],
      }),
    );
    await install({ p: { files: { skills: "" }, meta: { dependency_package_ids: ["dep"] } } });
    const gone = await overlay("p");
    expect(gone.missing_dependency_packages).toEqual(["dep"]);
    expect(await readFile(path.join(dst, "work.txt"), "utf8")).toBe("agent's own");
  });

  it("reports missing allow-listed entries and missing dependencies", async () => {
    await install({
      p: {
        files: { skills: "" },
        meta: { overlay_entries: "skills, nope", dependency_package_ids: ["ghost", "gone"] },
      },
      gone: { files: { x: "" }, meta: { installed_path: path.join(tmp, "nowhere") } },
    });
    const s = await overlay("p");
    expect(s.missing_requested_entries).toEqual(["nope"]);
    expect(s.missing_dependency_packages).toEqual(["ghost", "gone"]);
    expect(s.linked_dependency_count).toBe(0);
    expect(await exists(path.join(repoDir, "external_packages"))).toBe(false);
  });

  it("selects from a package of hundreds of entries as from a small one: sorted, allow-list order, missing ones named once", async () => {
    // The selection is linear in the entries (40k took seconds of CPU when it was quadratic);
    // what it selects must not change with that.
    const files: Record<string, string> = { ".hidden": "", "AGENTS.md": "" };
    for (let i = 0; i < 600; i++) files[`e${String(i).padStart(4, "0")}`] = "";
    const all = Object.keys(files).filter((n) => n.startsWith("e"));
    const dirs = await install({ big: { files } });
    const pkgDir = dirs.big as string;
    const everything = await overlay("big", true);
    expect(everything.linked_count).toBe(600);
    const m = await manifest();
    expect((m.linked_entries as { name: string }[]).map((e) => e.name)).toEqual(all.sort());

    const listed = [...all.slice(0, 450)].reverse();
    const missing = Array.from({ length: 200 }, (_, i) => `absent${i}`);
    await install({
      big: {
        files,
        meta: { overlay_entries: [...listed, ...missing, ...listed.slice(0, 10), "absent0"] },
      },
    });
    const some = await overlay("big");
    expect(some.requested_entries).toEqual([...listed, ...missing]);
    expect(some.missing_requested_entries).toEqual(missing);
    expect(some.linked_count).toBe(450);
    const again = await manifest();
    expect((again.linked_entries as { name: string }[]).map((e) => e.name)).toEqual(listed);
    // The entries no longer listed were the overlay's own: removed.
    expect(await exists(path.join(repoDir, "e0599"))).toBe(false);
    expect(await readlink(path.join(repoDir, "e0000"))).toBe(path.join(pkgDir, "e0000"));
  });

  it("reports collisions on a later run and never touches what is in the way", async () => {
    await install({
      p: { files: { skills: "pkg", docs: "pkg" }, meta: { dependency_package_ids: ["dep"] } },
      dep: { files: { x: "" } },
    });
    await writeFile(path.join(repoDir, "skills"), "user file");
    await symlink("/usr", path.join(repoDir, "docs"));
    await mkdir(path.join(repoDir, "external_packages", "dep"), { recursive: true });
    const s = await overlay("p", false);
    expect(s.collisions).toEqual(["docs", "skills"]);
    expect(s.collision_count).toBe(2);
    expect(s.dependency_collisions).toEqual(["dep"]);
    expect(await readFile(path.join(repoDir, "skills"), "utf8")).toBe("user file");
    expect(await readlink(path.join(repoDir, "docs"))).toBe("/usr");
  });

  it("replaces what is in the way on a session's first run", async () => {
    const dirs = await install({ p: { files: { skills: "pkg" } } });
    await writeFile(path.join(repoDir, "skills"), "template file");
    const s = await overlay("p", true);
    expect(s.collisions).toEqual([]);
    expect(await readlink(path.join(repoDir, "skills"))).toBe(
      path.join(dirs.p as string, "skills"),
    );
  });

  it("keeps a link that already points at the package entry", async () => {
    await install({ p: { files: { skills: "pkg" } } });
    await overlay("p");
    const s = await overlay("p");
    expect(s.linked_count).toBe(1);
    expect(s.collisions).toEqual([]);
  });
});

describe("overlay against hostile input", () => {
  it("refuses a package entry that is a symlink leading outside the package", async () => {
    const outside = path.join(tmp, "secret");
    await mkdir(outside);
    const dirs = await install({ p: { files: { ok: "" } } });
    await symlink(outside, path.join(dirs.p as string, "escape"));
    await symlink("/nonexistent-target", path.join(dirs.p as string, "dangling"));
    const s = await overlay("p", true);
    expect(s.collisions.sort()).toEqual(["dangling", "escape"]);
    expect(await exists(path.join(repoDir, "escape"))).toBe(false);
    expect(await isLink(path.join(repoDir, "ok"))).toBe(true);
  });

  it("never removes anything outside the repo from manifest names", async () => {
    await install({ p: { files: { ok: "" } } });
    const victim = path.join(sessionDir, "victim");
    await mkdir(victim);
    await writeFile(path.join(tmp, "victim2"), "keep");
    await writeFile(
      path.join(sessionDir, ".package_manifest.json"),
      JSON.stringify({
        package_id: "previous",
        linked_entries: [
          { name: "../victim", mode: "copy" },
          { name: "..", mode: "copy" },
          { name: "/etc", mode: "copy" },
          { name: "../../victim2", mode: "copy" },
        ],
        linked_dependency_packages: [{ package_id: "../../victim2", mode: "copy" }],
      }),
    );
    await overlay("p");
    expect(await exists(victim)).toBe(true);
    expect(await readFile(path.join(tmp, "victim2"), "utf8")).toBe("keep");
    expect(await exists(repoDir)).toBe(true);
  });

  it("never removes through an external_packages symlink", async () => {
    await install({
      p: { files: { ok: "" }, meta: { dependency_package_ids: ["dep"] } },
      dep: { files: { x: "" } },
    });
    const outside = path.join(tmp, "outside");
    await mkdir(path.join(outside, "dep"), { recursive: true });
    await symlink(outside, path.join(repoDir, "external_packages"));
    await writeFile(
      path.join(sessionDir, ".package_manifest.json"),
      JSON.stringify({
        package_id: "q",
        linked_dependency_packages: [{ package_id: "dep", mode: "copy" }],
      }),
    );
    const s = await overlay("p", false);
    expect(await exists(path.join(outside, "dep"))).toBe(true);
    expect(s.dependency_collisions).toEqual(["dep"]);
  });

  it("writes its manifest where the agent left a directory in its place", async () => {
    await install({ p: { files: { ok: "" } } });
    await mkdir(path.join(sessionDir, ".package_manifest.json", "junk"), { recursive: true });
    const s = await overlay("p");
    expect(s.linked_count).toBe(1);
    expect((await manifest()).package_id).toBe("p");
    // The next run reads it back: the session is not stuck.
    await overlay("p");
    expect(await readlink(path.join(repoDir, "ok"))).toBe(path.join(scipkg, "packages", "p", "ok"));
  });

  it("refuses a broken overlay_entries with a typed error", async () => {
    await install({ p: { files: { ok: "" }, meta: { overlay_entries: ["../etc"] } } });
    await expect(overlay("p")).rejects.toMatchObject({ code: "PACKAGE_OVERLAY_FAILED" });
  });

  // The registry is read during the overlay: a fake one removes the package at a known point.
  it("fails with FermiLink's 'Package root is invalid' when the package is removed after its entries are linked", async () => {
    const dirs = await install({
      p: {
        files: { "skills/s.md": "", "docs/d.md": "" },
        meta: { dependency_package_ids: ["dep"] },
      },
      dep: { files: { "lib/x": "" } },
    });
    const registry = await readRegistryFile(scipkg);
    const meta = registry.packages.get("p");
    if (!meta) throw new Error("test package p not registered");
    const pkgDir = dirs.p as string;
    // Looked up to link the dependencies, after the package's own entries.
    const packages = new Map(registry.packages);
    packages.get = (id) => {
      if (id === "dep") rmSync(pkgDir, { recursive: true, force: true });
      return registry.packages.get(id);
    };
    const run = overlayPackage({
      sessionDir,
      repoDir,
      packageId: "p",
      meta,
      packages,
      allowReplaceExisting: false,
      now: new Date(),
    });
    await expect(run).rejects.toMatchObject({
      code: "PACKAGE_OVERLAY_FAILED",
      message: `Package root is invalid: ${pkgDir}`,
    });
    // The links were made before the package went: the manifest names them for the next overlay.
    expect(await isLink(path.join(repoDir, "skills"))).toBe(true);
    expect((await manifest()).linked_entries).toHaveLength(2);
  });

  it("fails with FermiLink's 'Package root is invalid' when the package is removed before its path is resolved", async () => {
    const dirs = await install({ p: { files: { "skills/s.md": "" } } });
    const registry = await readRegistryFile(scipkg);
    const meta = registry.packages.get("p");
    if (!meta) throw new Error("test package p not registered");
    const pkgDir = dirs.p as string;
    // Read once the installed path was found a directory, before its real path is taken.
    const entries = meta.overlay_entries;
    const vanishing = Object.defineProperty({ ...meta }, "overlay_entries", {
      get: () => {
        rmSync(pkgDir, { recursive: true, force: true });
        return entries;
      },
    });
    await expect(
      overlayPackage({
        sessionDir,
        repoDir,
        packageId: "p",
        meta: vanishing,
        packages: registry.packages,
        allowReplaceExisting: false,
        now: new Date(),
      }),
    ).rejects.toMatchObject({
      code: "PACKAGE_OVERLAY_FAILED",
      message: `Package root is invalid: ${pkgDir}`,
    });
  });
});
