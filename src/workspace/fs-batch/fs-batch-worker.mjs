/**
 * The file-system worker: runs a batch of small local file creations (a new
 * session's workspace) with synchronous calls, in order, stopping at the
 * first failure. Plain JavaScript so it runs on bare node in any host (the
 * runner's build in dist/, tests under vitest). Protocol: fs-batch.ts.
 */
import {
  copyFileSync,
  lstatSync,
  mkdirSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { parentPort } from "node:worker_threads";

function apply(op) {
  switch (op.op) {
    case "mkdir":
      mkdirSync(op.path, { recursive: op.recursive === true });
      return;
    case "write":
      writeFileSync(op.path, op.content, { flag: op.flag ?? "w", mode: op.mode ?? 0o666 });
      return;
    case "link":
      try {
        symlinkSync(op.target, op.path);
      } catch {
        // Where symlinks are not allowed the alias is a copy (spec §4.3 step 3).
        copyFileSync(op.copyFrom, op.path);
      }
      return;
    case "claim":
      // rename() would silently replace an empty directory at `to`: an existing path is refused.
      if (lstatSync(op.to, { throwIfNoEntry: false }) !== undefined) {
        throw Object.assign(new Error(`EEXIST: file already exists, rename '${op.to}'`), {
          code: "EEXIST",
        });
      }
      renameSync(op.from, op.to);
      return;
    case "remove":
      rmSync(op.path, { recursive: true, force: true });
      return;
    default:
      throw new Error(`unknown file-system op ${op.op}`);
  }
}

parentPort.on("message", ({ id, ops }) => {
  for (let i = 0; i < ops.length; i++) {
    try {
      apply(ops[i]);
    } catch (err) {
      parentPort.postMessage({ id, failedAt: i, code: err.code ?? "", message: err.message });
      return;
    }
  }
  parentPort.postMessage({ id, failedAt: -1, code: "", message: "" });
});
