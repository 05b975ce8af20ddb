import { lstat, readFile, readlink, realpath, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import { PackageService } from "../../gen/fermilink/runner/v1/packages_pb.js";
import { type MetaEvent, type RunEvent, RunService } from "../../gen/fermilink/runner/v1/run_pb.js";
import { writePackageRoot } from "../helpers/package-tree.js";
import { postRun } from "../helpers/sse-client.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";

let server: TestServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

const exists = async (p: string) => (await lstat(p).catch(() => null)) !== null;

async function sseMeta(body: Record<string, unknown>): Promise<Record<string, unknown>> {
  if (!server) throw new Error("no server");
  const res = await postRun(server.baseUrl, { user_prompt: "use the package", ...body });
  expect(res.status).toBe(200);
  expect(res.events.at(-1)?.event).toBe("runner.exit");
  return JSON.parse(res.events[0]?.data ?? "{}") as Record<string, unknown>;
}

async function connectMeta(req: { sessionId: string; packageId?: string }): Promise<MetaEvent> {
  if (!server) throw new Error("no server");
  const client = createClient(RunService, createGrpcTransport({ baseUrl: server.baseUrl }));
  const events: RunEvent[] = [];
  for await (const ev of client.run({ userPrompt: "use the package", ...req })) events.push(ev);
  const first = events[0]?.event;
  if (first?.case !== "meta") throw new Error("first event is not meta");
  return first.value;
}

describe("scientific packages through the runner (both faces)", () => {
  it("refuses an unknown package before any workspace exists, even with an empty registry", async () => {
    server = await startTestServer();
    const res = await postRun(server.baseUrl, {
      session_id: "nope",
      user_prompt: "x",
      package_id: " MEEP ",
    });
    expect(res.status).toBe(400);
    expect(JSON.parse(res.text)).toEqual({
      detail: "Requested package not found: meep",
      code: "PACKAGE_NOT_FOUND",
    });
    const client = createClient(
      RunService,
      createConnectTransport({ baseUrl: server.baseUrl, httpVersion: "1.1" }),
    );
    const err = await (async () => {
      for await (const _ of client.run({ sessionId: "nope", userPrompt: "x", packageId: "meep" })) {
        // no event expected
      }
    })().catch((e: unknown) => e);
    expect(ConnectError.from(err).code).toBe(Code.NotFound);
    expect(await exists(path.join(server.workspacesRoot, "nope"))).toBe(false);
  });

  it("resolves, overlays, keeps and switches packages per session; meta.package on both faces", async () => {
    server = await startTestServer();
    const scipkg = path.join(server.home, "scientific_packages");
    const dirs = await writePackageRoot(
      scipkg,
      {
        alpha: {
          files: { "skills/s.md": "", "docs/d.md": "", "AGENTS.md": "hostile policy" },
          meta: { dependency_package_ids: ["beta"], overlay_entries: ["skills", "AGENTS-missing"] },
        },
        beta: { files: { "lib/l.py": "" } },
        gamma: { files: { "tools/t.sh": "" } },
      },
      { active: "gamma" },
    );
    // overlay_entries with a name the package lacks is reported, not fatal.
    const repo = path.join(server.workspacesRoot, "s1", "repo");

    const m1 = await sseMeta({ session_id: "s1", package_id: "Alpha" });
    expect(m1.package).toEqual({
      package_id: "alpha",
      package_path: await realpath(dirs.alpha as string),
      linked_count: 1,
      collision_count: 0,
      collisions: [],
      requested_entries: ["skills", "AGENTS-missing"],
      missing_requested_entries: ["AGENTS-missing"],
      dependency_package_ids: ["beta"],
      linked_dependency_count: 1,
      linked_dependency_packages: [
        { package_id: "beta", mode: "symlink", source: await realpath(dirs.beta as string) },
      ],
      missing_dependency_packages: [],
      dependency_collision_count: 0,
      dependency_collisions: [],
    });
    expect(await readlink(path.join(repo, "skills"))).toBe(
      path.join(await realpath(dirs.alpha as string), "skills"),
    );
    expect(await readlink(path.join(repo, "external_packages", "beta"))).toBe(
      await realpath(dirs.beta as string),
    );
    expect(await readFile(path.join(repo, "AGENTS.md"), "utf8")).not.toContain("hostile policy");
    const manifest = JSON.parse(
      await readFile(path.join(server.workspacesRoot, "s1", ".package_manifest.json"), "utf8"),
    );
    expect(manifest.package_id).toBe("alpha");

    // No package named: the session keeps the package its manifest recorded (not the active one).
    const m2 = await connectMeta({ sessionId: "s1" });
    expect(m2.package?.packageId).toBe("alpha");
    expect(m2.package?.requestedEntries).toEqual(["skills", "AGENTS-missing"]);
    expect(m2.package?.allEntries).toBe(false);
    expect(m2.package?.linkedDependencyPackages.map((d) => d.packageId)).toEqual(["beta"]);

    // Switching removes the old package's links and dependencies.
    const m3 = await connectMeta({ sessionId: "s1", packageId: "gamma" });
    expect(m3.package?.packageId).toBe("gamma");
    expect(m3.package?.allEntries).toBe(true);
    expect(await exists(path.join(repo, "skills"))).toBe(false);
    expect(await exists(path.join(repo, "external_packages"))).toBe(false);
    expect(await exists(path.join(repo, "tools"))).toBe(true);

    // A new session with no request gets the registry's active package.
    expect(
      ((await sseMeta({ session_id: "s2" })).package as { package_id: string }).package_id,
    ).toBe("gamma");
  });

  it("runs without a package (and without meta.package) when none resolves", async () => {
    server = await startTestServer();
    await writePackageRoot(path.join(server.home, "scientific_packages"), {
      alpha: { files: { x: "" } },
    });
    const meta = await sseMeta({ session_id: "plain" });
    expect(meta).not.toHaveProperty("package");
    expect((await connectMeta({ sessionId: "plain2" })).package).toBeUndefined();
  });

  it("honours FERMILINK_SCIPKG_ACTIVE over the registry's active package", async () => {
    server = await startTestServer({ FERMILINK_SCIPKG_ACTIVE: "beta" });
    await writePackageRoot(
      path.join(server.home, "scientific_packages"),
      { alpha: { files: { x: "" } }, beta: { files: { y: "" } } },
      { active: "alpha" },
    );
    expect(
      ((await sseMeta({ session_id: "e1" })).package as { package_id: string }).package_id,
    ).toBe("beta");
  });

  it("answers 400 / invalid_argument for a requested package id that normalises to nothing", async () => {
    server = await startTestServer();
    // A registered package, so the refusal is about the id, not about an empty registry.
    await writePackageRoot(path.join(server.home, "scientific_packages"), {
      alpha: { files: { x: "" } },
    });
    const res = await postRun(server.baseUrl, {
      session_id: "badid",
      user_prompt: "x",
      package_id: " -!- ",
    });
    // FermiLink's status and message (a PackageValidationError for a requested id, spec §1.1).
    expect(res.status).toBe(400);
    expect(JSON.parse(res.text)).toEqual({
      detail: "Package id is empty after normalization.",
      code: "PACKAGE_ID_INVALID",
    });
    for (const transport of [
      createGrpcTransport({ baseUrl: server.baseUrl }),
      createConnectTransport({ baseUrl: server.baseUrl, httpVersion: "1.1" }),
    ]) {
      const client = createClient(RunService, transport);
      const err = await (async () => {
        for await (const _ of client.run({
          sessionId: "badid",
          userPrompt: "x",
          packageId: "//",
        })) {
          // no event expected
        }
      })().catch((e: unknown) => e);
      const ce = ConnectError.from(err);
      expect(ce.code).toBe(Code.InvalidArgument);
      expect(ce.rawMessage).toBe("Package id is empty after normalization.");
    }
    expect(await exists(path.join(server.workspacesRoot, "badid"))).toBe(false);
  });

  it("answers 400 / failed_precondition for a requested package whose directory is gone", async () => {
    server = await startTestServer();
    const dirs = await writePackageRoot(path.join(server.home, "scientific_packages"), {
      alpha: { files: { x: "" } },
    });
    await rm(dirs.alpha as string, { recursive: true });
    const res = await postRun(server.baseUrl, {
      session_id: "g",
      user_prompt: "x",
      package_id: "alpha",
    });
    expect(res.status).toBe(400);
    expect(JSON.parse(res.text).detail).toBe(`Installed package path is invalid: ${dirs.alpha}`);
    const client = createClient(RunService, createGrpcTransport({ baseUrl: server.baseUrl }));
    const err = await (async () => {
      for await (const _ of client.run({ sessionId: "g", userPrompt: "x", packageId: "alpha" })) {
        // no event expected
      }
    })().catch((e: unknown) => e);
    expect(ConnectError.from(err).code).toBe(Code.FailedPrecondition);
  });

  it("lists installed packages over Connect and GET /packages", async () => {
    server = await startTestServer();
    const scipkg = path.join(server.home, "scientific_packages");
    await writePackageRoot(
      scipkg,
      {
        zeta: { files: { x: "" }, meta: { dependency_package_ids: ["alpha"] } },
        alpha: { files: { y: "" } },
        // A run refuses this overlay list (PACKAGE_OVERLAY_FAILED): not available, though installed.
        omega: { files: { z: "" }, meta: { overlay_entries: [5] } },
      },
      { active: "zeta" },
    );
    const client = createClient(
      PackageService,
      createConnectTransport({ baseUrl: server.baseUrl, httpVersion: "1.1" }),
    );
    const listed = await client.listPackages({});
    expect(listed.activePackageId).toBe("zeta");
    expect(listed.registryProblem).toBe("");
    expect(
      listed.packages.map((p) => [p.id, p.active, p.available, p.dependencyPackageIds]),
    ).toEqual([
      ["alpha", false, true, []],
      ["omega", false, false, []],
      ["zeta", true, true, ["alpha"]],
    ]);
    const res = await fetch(`${server.baseUrl}/packages`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as {
      active_package: string;
      packages: { id: string; installed_path: string }[];
    };
    expect(body.active_package).toBe("zeta");
    expect(body.packages.map((p) => p.id)).toEqual(["alpha", "omega", "zeta"]);
    expect((await fetch(`${server.baseUrl}/packages`, { method: "POST" })).status).toBe(405);

    await writeFile(path.join(scipkg, "registry.json"), "{broken");
    const broken = await client.listPackages({});
    expect(broken.packages).toEqual([]);
    expect(broken.registryProblem).toMatch(/not valid JSON/);
  });
});
