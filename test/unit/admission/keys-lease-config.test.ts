import { describe, expect, it, vi } from "vitest";
import { AdmissionController } from "../../../src/admission/admission-controller.js";
import { Lease } from "../../../src/admission/lease.js";
import {
  admissionKeyForQuery,
  admissionKeyForRun,
  normalizeAdmissionKey,
} from "../../../src/admission/user-key.js";
import { normalizeUser } from "../../../src/journal/run-store.js";
import { makeController } from "./helpers.js";

describe("admission keys (spec §1.1 step 2, §1.4, §3)", () => {
  it("admissionKeyForRun: user:<lower(strip(user_id))>, else session:<session_id>", () => {
    expect(admissionKeyForRun("  Alice ", "s1")).toBe("user:alice");
    expect(admissionKeyForRun(undefined, "Sess-1")).toBe("session:Sess-1");
    expect(admissionKeyForRun("", "abc")).toBe("session:abc");
    expect(admissionKeyForRun(" \t ", "abc")).toBe("session:abc");
  });

  it("admissionKeyForQuery: session fallback is strip(session_id) or anonymous, normalised", () => {
    expect(admissionKeyForQuery(" Bob ")).toBe("user:bob");
    expect(admissionKeyForQuery(" Bob ", "s")).toBe("user:bob");
    expect(admissionKeyForQuery(undefined, "  S1 ")).toBe("session:s1");
    expect(admissionKeyForQuery("  ", "   ")).toBe("session:anonymous");
    expect(admissionKeyForQuery()).toBe("session:anonymous");
  });

  it("strips what Python's str.strip() strips, not what JS trim() does", () => {
    // U+001C–U+001F and U+0085 are whitespace to Python (trim keeps them); U+FEFF is not (trim drops it).
    expect(admissionKeyForRun("\x1cAlice\x85", "s1")).toBe("user:alice");
    expect(admissionKeyForRun("\x1d\x1e\x1f", "abc")).toBe("session:abc");
    expect(admissionKeyForRun("\ufeff", "abc")).toBe("user:\ufeff");
    expect(admissionKeyForQuery("\x85", "\x1cS1\u3000")).toBe("session:s1");
    expect(normalizeAdmissionKey("\u2028User:X\x1f")).toBe("user:x");
    expect(normalizeUser("\x1cAlice ")).toBe(normalizeUser("alice"));
    expect(normalizeUser("\ufeffalice")).not.toBe(normalizeUser("alice"));
  });

  it("normalizeAdmissionKey: strip().lower(), empty becomes anonymous", () => {
    expect(normalizeAdmissionKey(" User:X ")).toBe("user:x");
    expect(normalizeAdmissionKey("   ")).toBe("anonymous");
    expect(normalizeAdmissionKey("")).toBe("anonymous");
  });

  it("the run key and the query key land in the same bucket", async () => {
    const c = makeController({ globalLimit: 5, perUserLimit: 2 });
    const lease = await c.acquire(admissionKeyForRun(undefined, "MySession"));
    expect(lease.userKey).toBe("session:mysession");
    expect(c.snapshotForUser(admissionKeyForQuery(undefined, " MySession ")).per_user_active).toBe(
      1,
    );
    const blank = await c.acquire("  ");
    expect(blank.userKey).toBe("anonymous");
  });
});

describe("Lease", () => {
  it("calls its release callback exactly once, even re-entrantly", () => {
    let lease: Lease | undefined;
    const onRelease = vi.fn(() => lease?.release());
    lease = new Lease({ userKey: "user:a", queued: true, waitedMs: 5 }, onRelease);
    expect(lease.released).toBe(false);
    lease.release();
    lease.release();
    expect(onRelease).toHaveBeenCalledTimes(1);
    expect(lease.released).toBe(true);
    expect(lease).toMatchObject({ userKey: "user:a", queued: true, waitedMs: 5 });
  });
});

describe("AdmissionController limits (spec §3 constructor clamps)", () => {
  it("clamps to the minimums and floors fractions", () => {
    const c = new AdmissionController({
      globalLimit: 0,
      perUserLimit: -3,
      maxQueueSize: -1,
      maxPendingPerUser: 2.7,
    });
    expect(c.snapshot()).toEqual({
      active_total: 0,
      pending_total: 0,
      global_limit: 1,
      per_user_limit: 1,
    });
    expect(c.maxQueueSize).toBe(0);
    expect(c.maxPendingPerUser).toBe(2);
  });

  it("refuses non-finite limits", () => {
    expect(
      () =>
        new AdmissionController({
          globalLimit: Number.NaN,
          perUserLimit: 1,
          maxQueueSize: 0,
          maxPendingPerUser: 0,
        }),
    ).toThrow(RangeError);
  });
});
