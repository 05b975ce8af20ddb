/**
 * The run store's checkpointer: a second connection to the store, on its own
 * thread, that copies the write-ahead log back into the database file when
 * the runner asks (`checkpoint` messages, one at a time, each answered).
 * SQLite's automatic checkpoint runs inside the commit that fills the log, on
 * the runner's event loop, and waits there for its fsyncs; here the loop goes
 * on. PASSIVE: it never waits for the writer or blocks it; what it cannot copy
 * yet is copied next time. `stop`: the log emptied into the file (this is the
 * store's last connection by then), and the connection closed. CommonJS and
 * plain JavaScript: the lightest worker node starts (no ES module loader), on
 * bare node in any host (dist/, vitest). Protocol: checkpointer.ts.
 */
const { parentPort, workerData } = require("node:worker_threads");
const Database = require("better-sqlite3");

const db = new Database(workerData.file);
db.pragma("busy_timeout = 200");
// It reads each page once, from the log, and writes it once: no cache to speak of.
db.pragma("cache_size = -256");

parentPort.on("message", (msg) => {
  if (msg === "stop") {
    try {
      db.pragma("wal_checkpoint(TRUNCATE)");
    } finally {
      db.close();
      parentPort.close();
    }
    return;
  }
  try {
    db.pragma("wal_checkpoint(PASSIVE)");
    parentPort.postMessage({ error: null });
  } catch (err) {
    parentPort.postMessage({ error: String(err?.message ?? err) });
  }
});
