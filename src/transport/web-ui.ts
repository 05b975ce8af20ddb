import { readFileSync } from "node:fs";
import path from "node:path";
import { type AnyRequest, type AnyResponse, methodAllowed } from "./http-types.js";

interface Asset {
  body: Buffer;
  type: string;
}

/**
 * The browser app (web/: a Connect-Web client built by `npm run build:web`
 * into web/dist/app.js, which is committed), read once at start-up and
 * served at `/`. Its CSP loads code and styles only from this runner; it may
 * call a runner on localhost or 127.0.0.1 (`?runner=`), which must list this origin for CORS.
 */
export function loadWebUi(webDir: string): Map<string, Asset> {
  const assets = new Map<string, Asset>();
  const add = (route: string, file: string, type: string) => {
    try {
      assets.set(route, { body: readFileSync(path.join(webDir, file)), type });
    } catch {
      // A checkout without the built app still serves the API; `/` then answers 404.
    }
  };
  add("/", "index.html", "text/html; charset=utf-8");
  add("/index.html", "index.html", "text/html; charset=utf-8");
  add("/style.css", "style.css", "text/css; charset=utf-8");
  add("/app.js", "dist/app.js", "text/javascript; charset=utf-8");
  return assets;
}

/** Serve one asset (405 for a method other than GET or HEAD); false when the path is not part of the app. */
export function serveWebUi(
  assets: Map<string, Asset>,
  pathname: string,
  req: AnyRequest,
  res: AnyResponse,
): boolean {
  const asset = assets.get(pathname);
  if (!asset) return false;
  if (!methodAllowed(req, res, "GET, HEAD")) return true;
  res.writeHead(200, {
    "content-type": asset.type,
    "content-length": asset.body.length,
    "cache-control": "no-cache",
    "x-content-type-options": "nosniff",
    "content-security-policy":
      // Calls reach only this runner or one on this machine, as the app's `?runner=` rule says:
      // a slip in that rule still cannot send a user's prompts to another host.
      "default-src 'self'; connect-src 'self' http://localhost:* http://127.0.0.1:* https://localhost:* https://127.0.0.1:*; " +
      "style-src 'self'; script-src 'self'; img-src 'self' data:; " +
      // No framing (a page that frames the app could trick a click on Run or Cancel), no <base> or
      // plugin, and no form sent anywhere.
      "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  });
  if (req.method === "HEAD") res.end();
  else res.end(asset.body);
  return true;
}
