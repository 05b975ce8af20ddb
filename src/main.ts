import { serve } from "./cli/serve.js";

// `npm start`: the server, exactly as `fermilink-runner serve`.
serve().catch((err: unknown) => {
  process.stderr.write(
    `fermilink-runner: fatal: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  process.exit(2);
});
