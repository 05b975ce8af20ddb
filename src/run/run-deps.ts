import type { AdmissionController } from "../admission/admission-controller.js";
import type { Config } from "../config/config.js";
import type { ExitReason } from "../events/run-event.js";
import type { RunStore } from "../journal/run-store.js";
import type { Logger } from "../log/logger.js";
import type { PackageOverlaySummary } from "../packages/overlay.js";
import type { PackageCatalog } from "../packages/package-catalog.js";
import type { startSupervisedProcess } from "../process/supervised-process.js";
import type { ProviderFiles } from "../workspace/prepare-workspace.js";
import type { SessionLock } from "../workspace/session-lock.js";

/** What the workspace stage needs from a run. */
export interface PrepareWorkspaceInput {
  workspacesRoot: string;
  sessionId: string;
  softwareRoot: string | null;
  providerAlias: string | null;
  prompt: string;
  /** The package the request named (normalised), or null. */
  packageId: string | null;
  /** The provider command's own directories and files, written with the workspace. */
  providerFiles: ProviderFiles;
}

/** What the pipeline reports about runs (implemented by `metrics/metrics.ts`). */
export interface RunObserver {
  runStarted(provider: string): void;
  runEnded(provider: string, reason: ExitReason, durationMs: number): void;
  /** A viewer of a live run was behind the journal's tail and read `events` from the store. */
  readBack(events: number): void;
}

/** The stages the pipeline drives, wired by the composition root (`app.ts`). */
export interface RunPipelineDeps {
  config: Config;
  logger: Logger;
  admission: AdmissionController;
  sessionLocks: SessionLock;
  prepareWorkspace: (
    input: PrepareWorkspaceInput,
  ) => Promise<{ repoDir: string; sessionDir: string; package: PackageOverlaySummary | null }>;
  /** The durable journal of runs and their events. */
  store: RunStore;
  /** The scientific package registry (requested packages are checked before admission). */
  packages: Pick<PackageCatalog, "checkRequested">;
  startProcess: (
    opts: Parameters<typeof startSupervisedProcess>[0],
  ) => ReturnType<typeof startSupervisedProcess>;
  /** The project's own `node_modules/.bin`, searched for provider CLIs before PATH. */
  projectBinDir: string;
  now: () => number;
  observer: RunObserver;
}
