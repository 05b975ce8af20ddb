import { readFile } from "node:fs/promises";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { RUNNER_ERROR_CODES } from "../../../src/errors/codes.js";
import { RunnerError } from "../../../src/errors/runner-error.js";
import { STATUS_TABLE, toConnectError, toHttpError } from "../../../src/errors/status-table.js";

describe("error status table", () => {
  it("maps every code, with FermiLink's HTTP statuses where it had one", () => {
    expect(Object.keys(STATUS_TABLE).sort()).toEqual([...RUNNER_ERROR_CODES].sort());
    expect(STATUS_TABLE.PROMPT_TOO_LONG.http).toBe(413);
    expect(STATUS_TABLE.REQUEST_INVALID.http).toBe(422);
    expect(STATUS_TABLE.PACKAGE_NOT_FOUND).toEqual({ connect: Code.NotFound, http: 400 });
    expect(STATUS_TABLE.QUEUE_FULL).toEqual({ connect: Code.ResourceExhausted, http: 429 });
    expect(STATUS_TABLE.PROVIDER_UNSUPPORTED).toEqual({ connect: Code.Unimplemented, http: 501 });
    expect(STATUS_TABLE.SHUTTING_DOWN).toEqual({ connect: Code.Unavailable, http: 503 });
    // The caller's malformed package id vs the server's broken package: both FermiLink's 400.
    expect(STATUS_TABLE.PACKAGE_ID_INVALID).toEqual({ connect: Code.InvalidArgument, http: 400 });
    expect(STATUS_TABLE.PACKAGE_INVALID).toEqual({ connect: Code.FailedPrecondition, http: 400 });
    // A body that did not arrive in time: HTTP's own 408, and the deadline a gRPC caller knows.
    expect(STATUS_TABLE.BODY_TIMEOUT).toEqual({ connect: Code.DeadlineExceeded, http: 408 });
    // A start failure that is not the binary's (spawn helper gone or late): transient.
    expect(STATUS_TABLE.PROVIDER_START_FAILED).toEqual({ connect: Code.Unavailable, http: 503 });
  });

  it("documents every code in the README's error table, with the Connect code and HTTP status it maps to", async () => {
    const readme = await readFile(new URL("../../../README.md", import.meta.url), "utf8");
    // Rows of the table: | `CODE` | connect_name | status | when |
    const documented = new Map<string, [string, number]>();
    for (const m of readme.matchAll(/^\| `([A-Z_]+)` +\| ([a-z_]+) +\| (\d{3}) +\|/gm)) {
      documented.set(m[1] as string, [m[2] as string, Number(m[3])]);
    }
    // `NotFound` → `not_found`, the spelling the table uses (the Connect protocol's).
    const snake = (code: Code) =>
      Code[code].replace(/[A-Z]/g, (c, i: number) => (i === 0 ? "" : "_") + c.toLowerCase());
    for (const code of RUNNER_ERROR_CODES) {
      const { connect, http } = STATUS_TABLE[code];
      expect([code, documented.get(code)]).toEqual([code, [snake(connect), http]]);
    }
  });

  it("never sends the cause to the caller", () => {
    const err = new RunnerError("INTERNAL", "Internal runner error.", {
      cause: new Error("secret path /x"),
    });
    expect(toConnectError(err).rawMessage).toBe("Internal runner error.");
    expect(JSON.stringify(toHttpError(err).body)).not.toContain("secret");
  });
});
