/**
 * What bin/fermilink-runner.mjs needs to start the server as a child node
 * process. Kept apart from serve.ts so the launcher loads nothing else.
 */
export { NODE_START_FLAGS } from "./v8-tuning.js";

/**
 * Set by the launcher in the server it starts: the launcher's pid. The server
 * shuts down (as on SIGTERM) once its parent is no longer that process: a
 * launcher killed outright (SIGKILL) cannot pass anything on, and the server,
 * in a session of its own, would otherwise run on with nobody to stop it.
 */
export const LAUNCHER_PID_ENV = "FERMILINK_RUNNER_LAUNCHER_PID";
