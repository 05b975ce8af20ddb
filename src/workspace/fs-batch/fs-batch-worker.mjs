/**
 * The file-system worker: runs a batch of small local file creations (a new
 * session's workspace) with synchronous calls, in order, stopping at the
 * first failure; a `tree` message registers a tree that `stamp` ops then
 * write under any directory with one small message. Plain JavaScript so it
 * runs on bare node in any host (the runner's build in dist/, tests under
 * vitest). Protocol: fs-batch.ts.
 */

import { randomBytes } from "node:crypto";
import {
  constants,
  copyFileSync,
  lstatSync,
  mkdirSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { parentPort } from "node:worker_threads";

/** Trees registered by name for `stamp` ops: mkdir and write ops with paths relative to the stamp. */
const trees = new Map();

function under(base, rel) {
  return rel === "" ? base : `${base}/${rel}`;
}

/** ownDir: each component below `root` lstat'ed, and anything but a real directory replaced by one. */
function ownDir(root, dir) {
  const rel = dir.slice(root.length);
  if (dir !== root && !dir.startsWith(`${root}/`)) throw new Error(`${dir} is not under ${root}`);
  let at = root;
  for (const part of rel.split("/")) {
    if (part === "") continue;
    at = `${at}/${part}`;
    const st = lstatSync(at, { throwIfNoEntry: false });
    if (st?.isDirectory()) continue;
    if (st !== undefined) rmSync(at, { force: true });
    mkdirSync(at);
  }
}

/** replaceFile: a new file (its name random, created exclusively) renamed over the old entry. */
function replaceFile(file, content, mode) {
  const slash = file.lastIndexOf("/");
  const tmp = `${file.slice(0, slash)}/.${file.slice(slash + 1)}.${randomBytes(6).toString("hex")}.tmp`;
  writeFileSync(tmp, content, { flag: "wx", mode });
  try {
    if (lstatSync(file, { throwIfNoEntry: false })?.isDirectory()) {
      rmSync(file, { recursive: true, force: true });
    }
    renameSync(tmp, file);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}

function apply(op) {
  switch (op.op) {
    case "mkdir":
      mkdirSync(op.path, { recursive: op.recursive === true });
      return;
    case "write":
      writeFileSync(op.path, op.content, { flag: op.flag ?? "w", mode: op.mode ?? 0o666 });
      return;
    case "stamp": {
      const tree = trees.get(op.tree);
      if (tree === undefined) throw new Error(`unknown tree ${op.tree}`);
      for (const t of tree) {
        if (t.op === "mkdir") mkdirSync(under(op.at, t.path));
        else writeFileSync(under(op.at, t.path), t.content, { flag: "wx", mode: t.mode ?? 0o666 });
      }
      return;
    }
    case "link":
      try {
        symlinkSync(op.target, op.path);
      } catch (err) {
        // Something is there already: a copy over it would write through it if it is a link.
        if (err.code === "EEXIST") throw err;
        // Where symlinks are not allowed the alias is a copy (spec §4.3 step 3), made exclusively.
        copyFileSync(op.copyFrom, op.path, constants.COPYFILE_EXCL);
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
    case "ownDir":
      ownDir(op.root, op.path);
      return;
    case "replaceFile":
      replaceFile(op.path, op.content, op.mode ?? 0o666);
      return;
    default:
      throw new Error(`unknown file-system op ${op.op}`);
  }
}

parentPort.on("message", ({ id, ops, tree }) => {
  if (tree !== undefined) {
    trees.set(tree, ops);
    return;
  }
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
