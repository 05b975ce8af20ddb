import { execFileSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { homedir, tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  normalizeRegistry,
  readRegistryFile,
  resolveInstalledPath,
} from "../../../src/packages/registry.js";
import { checkRequested, resolveSessionPackage } from "../../../src/packages/resolve-package.js";
import { writePackageRoot, writeRegistry } from "../../helpers/package-tree.js";

let root: string;
beforeEach(async () => {
  root = await mkdtemp(path.join(tmpdir(), "flr-reg-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("registry loading (spec §5.1)", () => {
  it("normalises ids, drops broken entries, normalises dependencies, keeps a registered active", () => {
    const reg = normalizeRegistry({
      active_package: " MEEP ",
      packages: {
        MEEP: { installed_path: "/x", dependency_package_ids: ["Lammps", "meep", "lammps"] },
        "--": { installed_path: "/y" },
        broken: "not an object",
        list: [1, 2],
        "qu tip": { dependency_package_ids: ["--"] },
      },
    });
    expect([...reg.packages.keys()]).toEqual(["meep", "qu-tip"]);
    expect(reg.packages.get("meep")?.dependency_package_ids).toEqual(["lammps"]);
    expect(reg.packages.get("meep")?.id).toBe("meep");
    expect(reg.packages.get("qu-tip")).not.toHaveProperty("dependency_package_ids");
    expect(reg.activePackage).toBe("meep");
  });

  it("keeps no active package when it is not registered (no fallback to the first)", () => {
    expect(
      normalizeRegistry({ active_package: "ghost", packages: { a: {} } }).activePackage,
    ).toBeNull();
    expect(normalizeRegistry({ packages: { a: {} } }).activePackage).toBeNull();
  });

  it("treats a missing file as empty and reports a corrupt one", async () => {
    expect(await readRegistryFile(root)).toMatchObject({ problem: null, activePackage: null });
    await writeFile(path.join(root, "registry.json"), "{not json");
    const reg = await readRegistryFile(root);
    expect(reg.packages.size).toBe(0);
    expect(reg.problem).toMatch(/registry\.json is not valid JSON/);
    await writeFile(path.join(root, "registry.json"), "[1]");
    expect((await readRegistryFile(root)).problem).toMatch(/does not hold a JSON object/);
  });
});

describe("which package a session gets (spec §5.3)", () => {
  it("goes requested -> session manifest -> env -> registry active -> none", async () => {
    await writePackageRoot(
      root,
      {
        a: { files: { x: "" } },
        b: { files: { x: "" } },
        c: { files: { x: "" } },
        d: { files: { x: "" } },
      },
      { active: "d" },
    );
    const registry = await readRegistryFile(root);
    const pick = async (
      requested: string | null,
      previousId: string | null,
      envActive: string | null,
    ) => (await resolveSessionPackage({ registry, requested, previousId, envActive }))?.id ?? null;
    expect(await pick("A", "b", "c")).toBe("a");
    expect(await pick(null, "b", "c")).toBe("b");
    expect(await pick(null, null, " C ")).toBe("c");
    expect(await pick(null, null, null)).toBe("d");
    // Unregistered or invalid candidates are skipped, not fatal.
    expect(await pick(null, "ghost", "ghost2")).toBe("d");
    const noActive = { ...registry, activePackage: null };
    expect(
      await resolveSessionPackage({
        registry: noActive,
        requested: null,
        previousId: null,
        envActive: null,
      }),
    ).toBeNull();
  });

  it("skips a session or active package whose install directory is gone", async () => {
    const dirs = await writePackageRoot(
      root,
      { a: { files: { x: "" } }, b: { files: { x: "" } } },
      { active: "b" },
    );
    await rm(dirs.a as string, { recursive: true });
    const registry = await readRegistryFile(root);
    expect(
      (await resolveSessionPackage({ registry, requested: null, previousId: "a", envActive: null }))
        ?.id,
    ).toBe("b");
  });

  it("refuses a requested package that is not registered, even with an empty registry", async () => {
    const empty = await readRegistryFile(root);
    await expect(checkRequested(empty, "meep")).rejects.toMatchObject({
      code: "PACKAGE_NOT_FOUND",
      message: "Requested package not found: meep",
    });
    await expect(
      resolveSessionPackage({
        registry: empty,
        requested: "meep",
        previousId: null,
        envActive: null,
      }),
    ).rejects.toMatchObject({ code: "PACKAGE_NOT_FOUND" });
  });

  it("refuses a requested package whose path is missing or invalid with FermiLink's messages", async () => {
    await writeRegistry(root, {
      packages: { nopath: { title: "x" }, gone: { installed_path: path.join(root, "nowhere") } },
    });
    const registry = await readRegistryFile(root);
    await expect(checkRequested(registry, "nopath")).rejects.toMatchObject({
      code: "PACKAGE_INVALID",
      message: "Package metadata is missing installed_path.",
    });
    await expect(checkRequested(registry, "gone")).rejects.toMatchObject({
      code: "PACKAGE_INVALID",
      message: `Installed package path is invalid: ${path.join(root, "nowhere")}`,
    });
    // A malformed id is the caller's fault, not the registry's: its own code (invalid_argument).
    await expect(checkRequested(registry, "--")).rejects.toMatchObject({
      code: "PACKAGE_ID_INVALID",
      message: "Package id is empty after normalization.",
    });
  });

  it("names a corrupt registry in the not-found message", async () => {
    await writeFile(path.join(root, "registry.json"), "{oops");
    await expect(checkRequested(await readRegistryFile(root), "meep")).rejects.toThrow(
      /registry is unusable/,
    );
  });

  it("expands ~ and ~user in installed_path as Python's expanduser does", async () => {
    const at = (installed_path: string) => resolveInstalledPath({ id: "p", installed_path });
    // root's home as the system's own account lookup (NSS) has it.
    const rootHome = execFileSync("getent", ["passwd", "root"]).toString().trim().split(":")[5];
    expect(rootHome).toMatch(/^\//);
    expect(await at("~root")).toBe(rootHome);
    expect(await at("~root/")).toBe(rootHome);
    expect(await at("~root/..")).toBe(path.dirname(rootHome as string));
    expect(await at("~")).toBe(homedir());
    // A name with no account is left as it is: a path relative to the working directory.
    await expect(at("~no-such-user-flr/pkg")).rejects.toMatchObject({
      code: "PACKAGE_INVALID",
      message: `Installed package path is invalid: ${path.resolve("~no-such-user-flr/pkg")}`,
    });
  });
});
