/**
 * Reading and replacing a file the agent could have replaced. A provider CLI runs with
 * write access to its session, so any file the runner reads back from a
 * session (the package manifest, a `.git` file) may have become a FIFO (an
 * open() that never returns: on the main thread it stops every request, on
 * the thread pool it holds a thread for good), a symlink to `/dev/zero` (a
 * read that never ends) or a huge file. So: no symlink is followed
 * (O_NOFOLLOW), opening never waits (O_NONBLOCK), and only a regular file of
 * at most `maxBytes` is read, all decided on the opened descriptor, so no
 * swap between a check and the read can change what is read.
 */
import { randomBytes } from "node:crypto";
import { closeSync, constants, fstatSync, openSync, readSync } from "node:fs";
import { open, rename, rm, writeFile } from "node:fs/promises";

const FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/** The file's text, or null when it is missing, not a regular file, or larger than `maxBytes`. */
export function readUntrustedFileSync(file: string, maxBytes: number): string | null {
  let fd: number;
  try {
    fd = openSync(file, FLAGS);
  } catch {
    return null;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile() || st.size > maxBytes) return null;
    // One byte more than fstat said: a file that grew since is refused, not cut.
    const buf = Buffer.allocUnsafe(st.size + 1);
    let n = 0;
    for (let r = -1; r !== 0 && n < buf.length; n += r) r = readSync(fd, buf, n, buf.length - n, n);
    return n === buf.length ? null : buf.toString("utf8", 0, n);
  } catch {
    return null;
  } finally {
    closeSync(fd);
  }
}

/** `readUntrustedFileSync`, off the main thread. */
export async function readUntrustedFile(file: string, maxBytes: number): Promise<string | null> {
  const handle = await open(file, FLAGS).catch(() => null);
  if (handle === null) return null;
  try {
    const st = await handle.stat();
    if (!st.isFile() || st.size > maxBytes) return null;
    const buf = Buffer.allocUnsafe(st.size + 1);
    let n = 0;
    for (let r = -1; r !== 0 && n < buf.length; n += r) {
      r = (await handle.read(buf, n, buf.length - n, n)).bytesRead;
    }
    return n === buf.length ? null : buf.toString("utf8", 0, n);
  } catch {
    return null;
  } finally {
    await handle.close();
  }
}

/**
 * Replace `file` atomically (readers see the old or the new content) through
 * a fresh file: its name is random and it is created exclusively, so no link
 * planted at a name the agent could guess is written through, and the rename
 * replaces whatever entry `file` was without following it.
 */
export async function replaceFileAtomic(
  file: string,
  content: string | Uint8Array,
  mode = 0o666,
): Promise<void> {
  const tmp = `${file}.tmp-${randomBytes(8).toString("hex")}`;
  try {
    await writeFile(tmp, content, { flag: "wx", mode });
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}
