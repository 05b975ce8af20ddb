import { RunnerError, type ValidationDetail } from "../../errors/runner-error.js";
import type { RunRequestInput } from "../../run/run-request.js";

const OPTIONAL_STRING_FIELDS = [
  "session_id",
  "user_id",
  "package_id",
  "sandbox",
  "provider",
] as const;

/**
 * Parse `POST /run`'s JSON body the way FastAPI/pydantic does for FermiLink's
 * `RunRequest` (spec §1.1): not JSON, not an object, `user_prompt` missing or
 * not a string, or an optional field of the wrong type → 422 with a `detail`
 * list; unknown fields are ignored. Every problem is reported at once.
 */
export function parseRunBody(raw: Buffer, contentType?: string): RunRequestInput {
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
  let body: unknown;
  try {
    body = JSON.parse(raw.toString("utf8"));
  } catch (err) {
    throw invalid([
      {
        type: "json_invalid",
        loc: ["body"],
        msg: `JSON decode error: ${err instanceof Error ? err.message : String(err)}`,
      },
    ]);
  }
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
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

function invalid(details: ValidationDetail[]): RunnerError {
  const summary = details.map((d) => `${d.loc.join(".")}: ${d.msg}`).join("; ");
  return new RunnerError("REQUEST_INVALID", `Invalid request body: ${summary}.`, { details });
}

/** `application/json` or `application/<anything>+json`, parameters ignored (FastAPI's rule). */
function isJsonType(contentType: string): boolean {
  const type = (contentType.split(";", 1)[0] ?? "").trim().toLowerCase();
  return type === "application/json" || (type.startsWith("application/") && type.endsWith("+json"));
}
