/** A process group's end: SIGTERM, the grace, SIGKILL, and when a group counts as gone. */
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
import { groupExists, terminateGroup } from "../../../src/process/terminate-group.js";
import { isAlive, killQuietly } from "../../helpers/process-census.js";
import { until } from "../../helpers/until.js";

/**
 * A parent that never reaps, out of the group it makes: it starts a leader (`sleep`) in a group
 * of its own and a member of that group that exits at once, then becomes `sleep` itself. The
 * member stays a zombie of it, as an orphaned grandchild does under a runner that is PID 1
 * without an init. Prints "<leader> <member>" once the member is in the group.
 */
const NEVER_REAPS = `
  my $leader = fork() // die;
  if ($leader == 0) { setpgrp(0, 0); exec("sleep", "1000") or exit 1; }
  setpgrp($leader, $leader);
  my $member = fork() // die;
  if ($member == 0) { setpgrp(0, $leader); exit 0; }
  # Either side's setpgrp suffices; the member may already have exited (in the group) by now.
  setpgrp($member, $leader);
  $| = 1;
  print "$leader $member\\n";
  exec("sleep", "1000") or die;
`;

/** State letter and process group of `pid`, from /proc. */
function statOf(pid: number): { state: string; pgrp: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
  const [state = "", , pgrp = ""] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { state, pgrp: Number(pgrp) };
}

let parent: ChildProcess | undefined;
afterEach(() => {
  if (parent?.pid !== undefined) killQuietly(parent.pid);
  parent = undefined;
});

describe("terminateGroup", () => {
  it("does not wait out the grace for members that exited but nobody reaps (zombies)", async () => {
    parent = spawn("perl", ["-e", NEVER_REAPS], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    parent.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
    });
    await until(() => out.includes("\n"), "the group's pids");
    const [leader = 0, member = 0] = out.trim().split(" ").map(Number);
    await until(() => statOf(member).state === "Z", "the member's exit");
    expect(statOf(member).pgrp).toBe(leader);
    // A zombie beside a running leader: the group is still there.
    expect(groupExists(leader)).toBe(true);

    const startedAt = Date.now();
    await terminateGroup(leader, 3000, 2000);
    // The leader died of the SIGTERM at once; both are zombies of a parent that never reaps.
    expect(Date.now() - startedAt).toBeLessThan(1000);
    expect(isAlive(leader)).toBe(false);
    expect(statOf(leader)).toEqual({ state: "Z", pgrp: leader });
    expect(groupExists(leader)).toBe(false);
  });
});
