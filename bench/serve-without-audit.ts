// `amctl serve` with the audit log off (`config.audit` false), for the audit benchmark's baseline
// only: the same command, flags and code path as the subject's server, with one thing changed.
// `amctl serve` deliberately has no flag for it, so this sets the default the command starts from.
import { defaultConfig } from "../src/config/config.js";

defaultConfig.audit = false;
await import("../src/cli/main.js");
