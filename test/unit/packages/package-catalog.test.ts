import { mkdir, mkdtemp, readFile, realpath, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createLogger } from "../../../src/log/logger.js";
import { PackageCatalog } from "../../../src/packages/package-catalog.js";
import { writePackageRoot } from "../../helpers/package-tree.js";

let tmp: string;
let scipkg: string;
let legacyRoot: string;
beforeEach(async () => {
  tmp = await realpath(await mkdtemp(path.join(tmpdir(), "flr-cat-")));
  scipkg = path.join(tmp, "scipkg");
  legacyRoot = path.join(tmp, "maxwelllink");
});
afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const catalog = (envActive: string | null = null) =>
  new PackageCatalog({
    scipkgRoot: scipkg,
    envActive,
    legacy: { root: legacyRoot, packageId: "maxwelllink-local" },
    logger: createLogger("silent"),
  });
const registryText = () => readFile(path.join(scipkg, "registry.json"), "utf8");

describe("legacy MaxwellLink bootstrap (spec §5.6)", () => {
  it("does nothing when the directory does not exist", async () => {
    await catalog().registry();
    await expect(stat(path.join(scipkg, "registry.json"))).rejects.toThrow();
  });

  it("registers the checkout once, activates it when nothing is active, and does not rewrite", async () => {
    await mkdir(legacyRoot);
    const c = catalog();
    const reg = await c.registry();
    const meta = reg.packages.get("maxwelllink-local");
    expect(meta).toMatchObject({
      title: "MaxwellLink (local)",
      installed_path: legacyRoot,
      source: `local-path:${legacyRoot}`,
      status: "installed",
      legacy: true,
    });
    expect(reg.activePackage).toBe("maxwelllink-local");
    const first = await registryText();
    expect(JSON.parse(first).active_package).toBe("maxwelllink-local");
    const mtime = (await stat(path.join(scipkg, "registry.json"))).mtimeMs;
    await new Promise((r) => setTimeout(r, 20));
    await Promise.all([c.registry(), c.registry(), catalog().registry()]);
    expect((await stat(path.join(scipkg, "registry.json"))).mtimeMs).toBe(mtime);
    expect(await registryText()).toBe(first);
  });

  it("registers a checkout reached through a link at its resolved path, as FermiLink does", async () => {
    const real = path.join(tmp, "maxwelllink-1.2");
    await mkdir(real);
    await symlink(real, legacyRoot);
    // What FermiLink's bootstrap wrote for this checkout: nothing to rewrite.
    await mkdir(scipkg, { recursive: true });
    const fermilinkEntry = {
      id: "maxwelllink-local",
      title: "MaxwellLink (local)",
      installed_path: real,
      source: `local-path:${real}`,
      status: "installed",
      legacy: true,
      installed_at: "2026-01-01T00:00:00+00:00",
      updated_at: "2026-01-01T00:00:00+00:00",
    };
    const payload = {
      version: 1,
      active_package: "maxwelllink-local",
      packages: { "maxwelllink-local": fermilinkEntry },
      updated_at: "2026-01-01T00:00:00+00:00",
    };
    await writeFile(path.join(scipkg, "registry.json"), JSON.stringify(payload));
    const reg = await catalog().registry();
    expect(reg.packages.get("maxwelllink-local")).toMatchObject({ installed_path: real });
    expect(JSON.parse(await registryText())).toEqual(payload);
  });

  it("keeps the existing active package and the other entries", async () => {
    await writePackageRoot(scipkg, { meep: { files: { x: "" } } }, { active: "meep" });
    await mkdir(legacyRoot);
    const reg = await catalog().registry();
    expect(reg.activePackage).toBe("meep");
    expect([...reg.packages.keys()].sort()).toEqual(["maxwelllink-local", "meep"]);
  });

  it("activates the checkout when the active package's directory is gone (no valid active package)", async () => {
    const dirs = await writePackageRoot(scipkg, { meep: { files: { x: "" } } }, { active: "meep" });
    await mkdir(legacyRoot);
    const c = catalog();
    // Registered while meep is valid: meep stays active and the legacy entry is up to date.
    expect((await c.registry()).activePackage).toBe("meep");
    await rm(dirs.meep as string, { recursive: true });
    const reg = await c.registry();
    expect(reg.activePackage).toBe("maxwelllink-local");
    expect(JSON.parse(await registryText()).active_package).toBe("maxwelllink-local");
    // The broken entry is kept (only the active pointer moves), and new sessions get the checkout.
    expect([...reg.packages.keys()].sort()).toEqual(["maxwelllink-local", "meep"]);
    expect((await c.list()).activeId).toBe("maxwelllink-local");
    // Once the active package is valid again nothing is rewritten.
    const text = await registryText();
    await c.registry();
    expect(await registryText()).toBe(text);
  });

  it("activates the checkout on first registration when the active package's directory is gone", async () => {
    const dirs = await writePackageRoot(scipkg, { meep: { files: { x: "" } } }, { active: "meep" });
    await rm(dirs.meep as string, { recursive: true });
    await mkdir(legacyRoot);
    const reg = await catalog().registry();
    expect(reg.activePackage).toBe("maxwelllink-local");
    expect(JSON.parse(await registryText()).active_package).toBe("maxwelllink-local");
  });

  it("never overwrites a corrupt registry", async () => {
    await mkdir(scipkg, { recursive: true });
    await writeFile(path.join(scipkg, "registry.json"), "{corrupt");
    await mkdir(legacyRoot);
    const reg = await catalog().registry();
    expect(reg.problem).toMatch(/not valid JSON/);
    expect(await registryText()).toBe("{corrupt");
  });
});

describe("listing packages", () => {
  it("runs on without packages when the registry or the legacy checkout cannot even be looked at (a link loop)", async () => {
    await mkdir(scipkg, { recursive: true });
    await symlink("registry.json", path.join(scipkg, "registry.json"));
    await symlink("maxwelllink", legacyRoot);
    const c = catalog();
    const reg = await c.registry();
    expect(reg.packages.size).toBe(0);
    expect(reg.problem).toMatch(/registry\.json/);
    expect((await c.list()).packages).toEqual([]);
    // Fixed by hand: the next look reads it.
    await rm(path.join(scipkg, "registry.json"));
    await writePackageRoot(scipkg, { meep: { files: { x: "" } } }, { active: "meep" });
    expect((await c.registry()).activePackage).toBe("meep");
  });

  it("lists every package sorted, with the effective active one and availability", async () => {
    const dirs = await writePackageRoot(
      scipkg,
      {
        zeta: {
          files: { a: "" },
          meta: { overlay_entries: ["a"], dependency_package_ids: ["alpha"] },
        },
        alpha: { files: { b: "" } },
      },
      { active: "alpha" },
    );
    await rm(dirs.zeta as string, { recursive: true });
    const listed = await catalog("zeta").list();
    // The env override names a package whose directory is gone: the registry's active one is used.
    expect(listed.activeId).toBe("alpha");
    expect(listed.packages.map((p) => [p.id, p.active, p.available])).toEqual([
      ["alpha", true, true],
      ["zeta", false, false],
    ]);
    expect(listed.packages[1]).toMatchObject({
      overlayEntries: ["a"],
      dependencyPackageIds: ["alpha"],
    });
  });
});
