import { RunnerError, type ValidationDetail } from "../../errors/runner-error.js";
import type { RunRequestInput } from "../../run/run-request.js";
import { nestsTooDeep, PyJsonDecodeError, pyJsonLoads } from "./py-json.js";

const OPTIONAL_STRING_FIELDS = [
  "session_id",
  "user_id",
  "package_id",
  "sandbox",
  "provider",
] as const;

/** One entry of FastAPI's 422 `detail` list; pydantic also says what it got and why. */
interface FastApiDetail extends ValidationDetail {
  input?: unknown;
  ctx?: Record<string, unknown>;
}

/**
 * A body FastAPI fails to read before validating it, answered 400
 * `{"detail": "There was an error parsing the body"}`: not UTF-8 (Starlette's
 * `json.loads` raises UnicodeDecodeError) or nested deeper than Python recurses.
 */
export class BodyParseError extends Error {
  override readonly name = "BodyParseError";
  /** FastAPI's detail for this case, word for word. */
  readonly detail = "There was an error parsing the body";
}

/** UTF-8 that must be valid; a leading BOM is dropped, as `json.loads` of bytes does (utf-8-sig). */
const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Parse `POST /run`'s JSON body the way FastAPI/pydantic does for FermiLink's
 * `RunRequest` (spec §1.1): empty, not JSON, not an object, `user_prompt`
 * missing or not a string, or an optional field of the wrong type → 422 with
 * a `detail` list; unknown fields are ignored. Every problem is reported at
 * once. A body that is not UTF-8 throws BodyParseError (400).
 */
export function parseRunBody(raw: Buffer, contentType?: string): RunRequestInput {
  // FastAPI reads a body only when it has bytes: an empty one is a missing body, whatever its type.
  if (raw.length === 0) {
    throw invalid([{ type: "missing", loc: ["body"], msg: "Field required", input: null }]);
  }
  // FastAPI reads the body as JSON only without a Content-Type or with a JSON one; any other
  // type leaves it bytes, which fail validation. This also keeps a web page from starting runs:
  // a browser sends text/plain or a form cross-origin without asking (no CORS preflight).
  if (contentType !== undefined && !isJsonType(contentType)) {
    throw invalid([
      {
        type: "model_attributes_type",
        loc: ["body"],
        msg: "Input should be a valid dictionary or object to extract fields from",
      },
    ]);
  }
  const body = decodeJson(raw);
  // `null` is no body at all to FastAPI, as an empty one is.
  if (body === null) {
    throw invalid([{ type: "missing", loc: ["body"], msg: "Field required", input: null }]);
  }
  if (typeof body !== "object" || Array.isArray(body)) {
    throw invalid([
      {
        type: "model_attributes_type",
        loc: ["body"],
        msg: "Input should be a valid dictionary or object to extract fields from",
      },
    ]);
  }
  const obj = body as Record<string, unknown>;
  const details: ValidationDetail[] = [];
  const prompt = obj.user_prompt;
  if (prompt === undefined) {
    details.push({ type: "missing", loc: ["body", "user_prompt"], msg: "Field required" });
  } else if (typeof prompt !== "string") {
    details.push({
      type: "string_type",
      loc: ["body", "user_prompt"],
      msg: "Input should be a valid string",
    });
  }
  const out: RunRequestInput = { user_prompt: typeof prompt === "string" ? prompt : "" };
  for (const field of OPTIONAL_STRING_FIELDS) {
    const v = obj[field];
    if (v === undefined || v === null) continue;
    if (typeof v !== "string") {
      details.push({
        type: "string_type",
        loc: ["body", field],
        msg: "Input should be a valid string",
      });
      continue;
    }
    out[field] = v;
  }
  const detach = obj.detach;
  if (detach !== undefined && detach !== null) {
    if (typeof detach === "boolean") out.detach = detach;
    else
      details.push({
        type: "bool_type",
        loc: ["body", "detach"],
        msg: "Input should be a valid boolean",
      });
  }
  if (details.length > 0) throw invalid(details);
  return out;
}

/**
 * The body's JSON value as Starlette's `json.loads` reads it. Malformed JSON
 * is FastAPI's `json_invalid` entry: `loc` ["body", <index in characters>],
 * `msg` "JSON decode error", `input` {}, and Python's own reason in
 * `ctx.error` (e.g. "Expecting value", "Expecting ',' delimiter").
 */
function decodeJson(raw: Buffer): unknown {
  let text: string;
  try {
    text = utf8.decode(raw);
  } catch (err) {
    throw new BodyParseError("request body is not UTF-8", { cause: err });
  }
  let value: unknown;
  let parsed = false;
  try {
    value = JSON.parse(text);
    parsed = true;
  } catch (err) {
    // JSON.parse's messages and positions are V8's; Python's are what FermiLink's callers see.
    // Python also takes NaN and Infinity, which JSON.parse refuses: their value is returned.
    if (text.length > PY_SCAN_MAX_CHARS) throw jsonInvalid(v8Failure(text, err));
  }
  if (parsed) {
    // JSON.parse takes any depth; Python's json.loads gives up near its recursion limit.
    if (nestsTooDeep(text)) throw new BodyParseError("request body nested too deeply");
    return value;
  }
  try {
    return pyJsonLoads(text);
  } catch (err) {
    if (!(err instanceof PyJsonDecodeError)) {
      throw new BodyParseError("request body nested too deeply", { cause: err });
    }
    throw jsonInvalid(err);
  }
}

/**
 * Above this many characters a malformed body is located by V8's parser, not
 * by Python's scanner (which takes up to ≈ 0.35 µs a character on hostile
 * input: ≈ 360 ms of the event loop for one 1 MiB body). The 422 keeps
 * FastAPI's shape and a character position; `ctx.error` is then V8's wording,
 * and NaN or Infinity in such a body are refused.
 */
const PY_SCAN_MAX_CHARS = 64 * 1024;

/** FastAPI's entry for a body that is not JSON. */
function jsonInvalid(at: { pos: number; msg: string }): RunnerError {
  return invalid([
    {
      type: "json_invalid",
      loc: ["body", at.pos],
      msg: "JSON decode error",
      input: {},
      ctx: { error: at.msg },
    },
  ]);
}

/** Where and why JSON.parse refused `text`, the position in characters (code points), as Python counts. */
function v8Failure(text: string, err: unknown): { pos: number; msg: string } {
  const message = err instanceof Error ? err.message : String(err);
  const at = /^(.*) in JSON at position (\d+)/.exec(message);
  const units = at ? Math.min(Number(at[2]), text.length) : text.length;
  let pos = 0;
  for (let i = 0; i < units; i++) {
    const c = text.charCodeAt(i);
    // The second half of a surrogate pair is not a character of its own.
    if (c >= 0xdc00 && c <= 0xdfff && i > 0 && (text.charCodeAt(i - 1) & 0xfc00) === 0xd800)
      continue;
    pos++;
  }
  return { pos, msg: at?.[1] ?? message };
}

function invalid(details: FastApiDetail[]): RunnerError {
  const summary = details
    .map((d) => {
      const why = typeof d.ctx?.error === "string" ? ` (${d.ctx.error})` : "";
      return `${d.loc.join(".")}: ${d.msg}${why}`;
    })
    .join("; ");
  return new RunnerError("REQUEST_INVALID", `Invalid request body: ${summary}.`, { details });
}

/** `application/json` or `application/<anything>+json`, parameters ignored (FastAPI's rule). */
function isJsonType(contentType: string): boolean {
  const type = (contentType.split(";", 1)[0] ?? "").trim().toLowerCase();
  return type === "application/json" || (type.startsWith("application/") && type.endsWith("+json"));
}
