import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  checkRequestedPackage,
  normalizePackageId,
  readRegistryPackageIds,
} from "../../../src/workspace/package-registry.js";

let root: string;
beforeEach(async () => {
  root = await mkdtemp(path.join(tmpdir(), "flr-pk-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("package registry (minimal, issue 4 extends it)", () => {
  it("normalises ids as FermiLink does", () => {
    expect(normalizePackageId(" ASE Package ")).toBe("ase-package");
    expect(normalizePackageId("Qu/Tip!!v2")).toBe("qu-tip-v2");
    expect(normalizePackageId("_-Méep-_")).toBe("méep");
    expect(() => normalizePackageId(" -- ")).toThrow("Package id is empty after normalization.");
  });

  it("reads installed ids, treating a missing or corrupt registry as empty", async () => {
    expect(await readRegistryPackageIds(root)).toEqual(new Set());
    await writeFile(path.join(root, "registry.json"), "{corrupt");
    expect(await readRegistryPackageIds(root)).toEqual(new Set());
    await mkdir(root, { recursive: true });
    await writeFile(
      path.join(root, "registry.json"),
      JSON.stringify({ version: 1, packages: { Meep: { id: "meep" }, bad: 3 } }),
    );
    expect(await readRegistryPackageIds(root)).toEqual(new Set(["meep"]));
    expect(await checkRequestedPackage(root, " MEEP ")).toBe("meep");
    await expect(checkRequestedPackage(root, "lammps")).rejects.toMatchObject({
      code: "PACKAGE_NOT_FOUND",
    });
  });
});
