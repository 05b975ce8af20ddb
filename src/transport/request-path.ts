/** `scheme://authority` at the start of an absolute-form request target (RFC 9112 §3.2.2). */
const ABSOLUTE_FORM_PREFIX = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i;

/**
 * The path of a request target as the client sent it, for routing: never
 * `new URL(target, base).pathname`, which reads `//host/...` as a host,
 * resolves `..` and `%2e%2e` segments and turns `\` into `/`. Those would
 * route `//x/ops/admission` or `/a/../ops/admission` to the ops routes past
 * a proxy that allows or denies by path prefix (nginx merges slashes and
 * resolves dots before it matches, then forwards the target unchanged), and
 * Starlette (FermiLink) answers them 404. Percent escapes are left as sent.
 */
export function requestPath(target: string): string {
  const rest = target.startsWith("/") ? target : target.replace(ABSOLUTE_FORM_PREFIX, "");
  const end = rest.search(/[?#]/);
  const path = end === -1 ? rest : rest.slice(0, end);
  return path === "" ? "/" : path;
}

/**
 * A query parameter's value; a repeated one counts by its last value, as
 * FastAPI reads a scalar one (Starlette's QueryParams keep the last). Every
 * route reads its query through this: a gateway that appends the caller's
 * `user_id` to the query then names the user, not the caller, on all of them.
 */
export function lastQueryValue(url: URL, name: string): string | undefined {
  return url.searchParams.getAll(name).at(-1);
}
