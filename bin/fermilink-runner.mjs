#!/usr/bin/env -S node --min-semi-space-size=16
// The `fermilink-runner` command: TypeScript sources run through tsx (a runtime dependency).
import { register } from "tsx/esm/api";

register();
await import("../src/cli/main.ts");
