import { describe, expect, it } from "vitest";
import {
  isExportableEntryName,
  normalizeDependencyIds,
  normalizeOverlayEntries,
  normalizePackageId,
} from "../../../src/packages/package-id.js";

describe("package ids (spec §5.2)", () => {
  it("normalises as FermiLink does", () => {
    expect(normalizePackageId(" ASE Package ")).toBe("ase-package");
    expect(normalizePackageId("Qu/Tip!!v2")).toBe("qu-tip-v2");
    expect(normalizePackageId("_-Méep-_")).toBe("méep");
    expect(normalizePackageId("a--b---c")).toBe("a-b-c");
    expect(normalizePackageId("lammps_2024")).toBe("lammps_2024");
  });

  it("refuses an id that normalises to nothing, with FermiLink's message", () => {
    for (const bad of ["", "  ", " -- ", "..", "/", "_"]) {
      expect(() => normalizePackageId(bad)).toThrow("Package id is empty after normalization.");
    }
  });

  it("never yields a path-like id, whatever the input", () => {
    for (const raw of ["../../etc", "/abs/path", "a/../b", "..\\x", "a\0b"]) {
      const id = normalizePackageId(raw);
      expect(id).not.toMatch(/[/\\\0]/);
      expect(id).not.toMatch(/^\.+$/);
    }
  });
});

describe("dependency lists", () => {
  it("normalises, drops the owner and duplicates, accepts a comma string", () => {
    expect(normalizeDependencyIds(["Dep A", "dep-a", "owner", " "], "owner")).toEqual(["dep-a"]);
    expect(normalizeDependencyIds("x, Y ,x", "owner")).toEqual(["x", "y"]);
    expect(normalizeDependencyIds(undefined, "owner")).toBeNull();
  });

  it("refuses invalid entries", () => {
    expect(() => normalizeDependencyIds(["ok", "--"], "o")).toThrow(
      "Invalid dependency package id",
    );
    expect(() => normalizeDependencyIds([3], "o")).toThrow("can only contain strings");
    expect(() => normalizeDependencyIds({ a: 1 }, "o")).toThrow("must be a list");
  });
});

describe("overlay entries", () => {
  it("keeps top-level exportable names once, in order", () => {
    expect(normalizeOverlayEntries(["skills", "docs", "skills"])).toEqual(["skills", "docs"]);
    expect(normalizeOverlayEntries("skills, docs")).toEqual(["skills", "docs"]);
    expect(normalizeOverlayEntries(null)).toBeNull();
  });

  it("refuses nested, hidden and reserved names with FermiLink's messages", () => {
    expect(() => normalizeOverlayEntries(["a/b"])).toThrow(
      "Overlay entry names must be top-level names (no path separators).",
    );
    expect(() => normalizeOverlayEntries([".."])).toThrow("top-level names");
    expect(() => normalizeOverlayEntries([".git"])).toThrow(
      "Overlay entry is not exportable: .git",
    );
    expect(() => normalizeOverlayEntries(["AGENTS.md"])).toThrow("not exportable");
  });

  it("reserves the policy file, its aliases and the runner's own directories", () => {
    for (const name of [
      "agents.md",
      "Claude.md",
      "GEMINI.md",
      "projects",
      "outputs",
      "external_packages",
    ]) {
      expect(isExportableEntryName(name)).toBe(false);
    }
    for (const name of [".hidden", "node_modules", "__pycache__", ".venv", ""]) {
      expect(isExportableEntryName(name)).toBe(false);
    }
    expect(isExportableEntryName("skills")).toBe(true);
  });
});
