#!/usr/bin/env node
// Entry point of `amctl` (and `npm start`). The sources are TypeScript run through tsx's loader,
// so there is no build step and nothing to go stale between a checkout and a run.
import { register } from "tsx/esm/api";

register();
await import("../src/cli/main.ts");
