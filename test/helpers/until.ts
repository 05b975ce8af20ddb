/**
 * Poll `cond` until it holds: tests wait on state that another process, a
 * worker or a timer changes, however slow a loaded CI box is, instead of
 * sleeping a fixed time. Throws, naming `what`, after `ms`.
 */
export async function until(
  cond: () => boolean | Promise<boolean>,
  what: string,
  ms = 10_000,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
