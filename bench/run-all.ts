/** `npm run bench`: every benchmark in turn (each writes bench/results/<name>.json). */
await import("./admission-ops.js");
