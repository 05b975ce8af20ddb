import { RunnerError, type ValidationDetail } from "../../errors/runner-error.js";
import { emptyPromptDetail, type RunRequestInput } from "../../run/run-request.js";
import {
  jsonParseWithPyConstants,
  nestsTooDeep,
  PyJsonDecodeError,
  pyJsonLoads,
} from "./py-json.js";
import { PyUnicodeDecodeError, pyDecodeJsonBytes } from "./py-json-bytes.js";

/**
 * `RunRequest`'s fields in their declared order (spec §1.1), which is the order
 * pydantic lists their errors in; `detach` is ours and comes last.
 */
const FIELDS = [
  "session_id",
  "user_id",
  "user_prompt",
  "package_id",
  "sandbox",
  "provider",
] as const;

/**
 * A body FastAPI fails to read before validating it, answered 400
 * `{"detail": "There was an error parsing the body"}` (FastAPI's words): bytes
 * the codec `json.detect_encoding` picks cannot decode (Starlette's
 * `json.loads` raises UnicodeDecodeError) or nested deeper than Python recurses.
 */
function unreadable(why: string, cause?: unknown): RunnerError {
  return new RunnerError("BODY_UNREADABLE", "There was an error parsing the body", {
    cause: cause ?? new Error(why),
  });
}

/** No body at all (empty, or JSON `null`), as pydantic reports the missing model. */
const MISSING_BODY: ValidationDetail = {
  type: "missing",
  loc: ["body"],
  msg: "Field required",
  input: null,
};

/** A body that is not a JSON object, with what pydantic says it got. */
function notAnObject(input: unknown): ValidationDetail {
  return {
    type: "model_attributes_type",
    loc: ["body"],
    msg: "Input should be a valid dictionary or object to extract fields from",
    input,
  };
}

/**
 * Parse `POST /run`'s JSON body the way FastAPI/pydantic does for FermiLink's
 * `RunRequest` (spec §1.1): empty, not JSON, not an object, `user_prompt`
 * missing or not a string, or an optional field of the wrong type → 422 with
 * a `detail` list; unknown fields are ignored. Every problem is reported at
 * once. A body Python cannot decode throws BODY_UNREADABLE (400).
 */
export function parseRunBody(raw: Buffer, contentType?: string): RunRequestInput {
  // FastAPI reads a body only when it has bytes: an empty one is a missing body, whatever its type.
  if (raw.length === 0) {
    throw invalid([MISSING_BODY]);
  }
  // FastAPI reads the body as JSON only without a Content-Type or with a JSON one; any other
  // type leaves it bytes, which fail validation. This also keeps a web page from starting runs:
  // a browser sends text/plain or a form cross-origin without asking (no CORS preflight).
  // An empty Content-Type is none (FastAPI tests `if not content_type_value`).
  if (contentType !== undefined && contentType !== "" && !isJsonType(contentType)) {
    // FastAPI's jsonable_encoder sends bytes as `bytes.decode()`. It fails with a 500 on bytes
    // that are not UTF-8; a lossy decoding answers them with the 422 all others get.
    throw invalid([notAnObject(raw.toString("utf8"))]);
  }
  const body = decodeJson(raw);
  // `null` is no body at all to FastAPI, as an empty one is.
  if (body === null) {
    throw invalid([MISSING_BODY]);
  }
  if (typeof body !== "object" || Array.isArray(body)) {
    throw invalid([notAnObject(body)]);
  }
  const obj = body as Record<string, unknown>;
  const details: ValidationDetail[] = [];
  const out: RunRequestInput = { user_prompt: "" };
  let emptyPrompt = false;
  for (const field of FIELDS) {
    const v = obj[field];
    if (field === "user_prompt" && v === undefined) {
      // A missing field's input is the object it is missing from, as pydantic reports it.
      details.push({ type: "missing", loc: ["body", field], msg: "Field required", input: obj });
      continue;
    }
    if (field !== "user_prompt" && (v === undefined || v === null)) continue;
    if (typeof v !== "string") {
      details.push({
        type: "string_type",
        loc: ["body", field],
        msg: "Input should be a valid string",
        input: v,
      });
      continue;
    }
    if (field === "user_prompt" && v === "") {
      emptyPrompt = true;
      details.push(emptyPromptDetail());
    }
    out[field] = v;
  }
  const detach = obj.detach;
  if (detach !== undefined && detach !== null) {
    const read = laxBool(detach);
    if (typeof read === "boolean") out.detach = read;
    else details.push({ ...read, loc: ["body", "detach"], input: detach });
  }
  // Alone, an empty prompt is left to validateRunRequest, which answers it with its own code
  // (PROMPT_EMPTY) on both faces; pydantic lists it with any other error.
  if (details.length > (emptyPrompt ? 1 : 0)) throw invalid(details);
  return out;
}

/** pydantic's lax-mode strings for a bool (compared ASCII case-insensitively, never trimmed). */
const FALSE_STRINGS = new Set(["0", "f", "n", "no", "off", "false"]);
const TRUE_STRINGS = new Set(["1", "t", "y", "on", "yes", "true"]);

/**
 * A JSON value as pydantic's lax `bool` reads it (FermiLink's other fields are
 * validated lax too): a bool; 0 or 1 (0.0, 1.0); one of its strings. Another
 * string or whole number is `bool_parsing`; anything else (a fraction, a whole
 * number outside i64, an object) `bool_type`.
 */
function laxBool(v: unknown): boolean | Pick<ValidationDetail, "type" | "msg"> {
  const parsing = {
    type: "bool_parsing",
    msg: "Input should be a valid boolean, unable to interpret input",
  };
  if (typeof v === "boolean") return v;
  if (typeof v === "string") {
    // ASCII letters only, as pydantic's eq_ignore_ascii_case.
    const lower = v.replace(/[A-Z]/g, (c) => c.toLowerCase());
    if (FALSE_STRINGS.has(lower)) return false;
    if (TRUE_STRINGS.has(lower)) return true;
    return parsing;
  }
  // A Python int or float that is a whole number within i64 (pydantic's float_as_int); JSON.parse
  // keeps no difference between 1 and 1.0, and pydantic reads both alike.
  if (typeof v === "number" && Number.isInteger(v) && Math.abs(v) < 2 ** 63) {
    if (v === 0) return false;
    if (v === 1) return true;
    return parsing;
  }
  return { type: "bool_type", msg: "Input should be a valid boolean" };
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
    // UTF-8 (a BOM dropped), UTF-16 or UTF-32, as Python's json.loads of bytes reads them.
    text = pyDecodeJsonBytes(raw);
  } catch (err) {
    if (!(err instanceof PyUnicodeDecodeError)) throw err;
    throw unreadable("request body cannot be decoded", err);
  }
  // JSON.parse builds the value, Python's NaN and Infinity read too; Python's scanner (slow
  // where it builds values) only says why a body is refused.
  const value = jsonParseWithPyConstants(text);
  if (value === undefined) return pyRefusal(text);
  // JSON.parse takes any depth; Python's json.loads gives up near its recursion limit.
  if (nestsTooDeep(text)) throw unreadable("request body nested too deeply");
  return value;
}

/**
 * Why Python refuses `text` (which JSON.parse refused, Python's constants
 * read), as FastAPI answers it: Python's message at Python's position, or 400
 * where it recursed too deep first. The scanner only judges here (no values
 * built), which keeps it linear and fast on a hostile 1 MiB body.
 */
function pyRefusal(text: string): never {
  try {
    pyJsonLoads(text, { values: false });
  } catch (err) {
    if (err instanceof PyJsonDecodeError) throw jsonInvalid(err);
    throw unreadable("request body nested too deeply", err);
  }
  // Unreachable while JSON plus Python's three constants is Python's grammar.
  throw new Error("JSON.parse refused a body Python's scanner accepts");
}

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

function invalid(details: ValidationDetail[]): RunnerError {
  const summary = details
    .map((d) => {
      const why = typeof d.ctx?.error === "string" ? ` (${d.ctx.error})` : "";
      return `${d.loc.join(".")}: ${d.msg}${why}`;
    })
    .join("; ");
  return new RunnerError("REQUEST_INVALID", `Invalid request body: ${summary}.`, { details });
}

/**
 * `application/json` or `application/<anything>+json`, parameters ignored:
 * FastAPI's test, on the type Python's `email.message` reads (the part before
 * `;`, stripped, lower case; anything without exactly one `/` is text/plain).
 */
function isJsonType(contentType: string): boolean {
  const type = (contentType.split(";", 1)[0] ?? "").trim().toLowerCase();
  const slash = type.indexOf("/");
  if (slash === -1 || type.includes("/", slash + 1)) return false;
  const sub = type.slice(slash + 1);
  return type.slice(0, slash) === "application" && (sub === "json" || sub.endsWith("+json"));
}
