/**
 * `pyFloatRepr` against CPython itself: `repr(float)`, what `json.dumps` and
 * `str()` write for FermiLink's ratios (`/ops/concurrency`, its `.prom` text).
 */
import { execFileSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { pyFloatRepr } from "../../../src/transport/sse/py-json.js";

const VALUES = [
  0,
  -0,
  1,
  2,
  0.5,
  1 / 3,
  2 / 3,
  0.1 + 0.2,
  3 / 200,
  1 / 4_294_967_295,
  0.0001,
  0.00009999,
  0.00001,
  2.5e-7,
  1e-300,
  5e-324,
  123.456,
  1e15,
  999_999_999_999_999.9,
  1e16,
  2.5e16,
  1e21,
  1.7976931348623157e308,
  -1.5,
  -0.00001,
  4294967295,
  1234567890123456.8,
];

describe("pyFloatRepr", () => {
  it("writes every float as CPython's repr does", () => {
    // JSON carries each double exactly (shortest round-trip digits both ways).
    const script =
      "import json,sys; print(json.dumps([repr(float(x)) for x in json.load(sys.stdin)]))";
    const python = JSON.parse(
      execFileSync("python3", ["-c", script], {
        input: JSON.stringify(VALUES.map((v) => (Object.is(v, -0) ? "-0.0" : v))),
      }).toString(),
    ) as string[];
    expect(VALUES.map(pyFloatRepr)).toEqual(python);
  });
});
