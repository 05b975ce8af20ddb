import { describe, expect, it } from "vitest";
import { nextSpawnTurn } from "../../../src/process/spawn-turns.js";

describe("spawn turns", () => {
  it("grants turns in request order, one event-loop iteration apart", async () => {
    const order: string[] = [];
    const turns = [1, 2, 3].map((n) => nextSpawnTurn().then(() => order.push(`spawn ${n}`)));
    // I/O that becomes ready meanwhile (here: immediates queued after each grant) runs between spawns.
    const io = (async () => {
      for (let i = 0; i < 3; i++) {
        await new Promise((r) => setImmediate(r));
        order.push(`io ${i}`);
      }
    })();
    await Promise.all([...turns, io]);
    expect(order.filter((o) => o.startsWith("spawn"))).toEqual(["spawn 1", "spawn 2", "spawn 3"]);
    // Never two spawns back to back without the loop turning in between.
    const firstSpawn = order.indexOf("spawn 1");
    const lastSpawn = order.indexOf("spawn 3");
    expect(order.slice(firstSpawn, lastSpawn + 1).some((o) => o.startsWith("io"))).toBe(true);
  });
});
