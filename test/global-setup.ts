// Before any test file: the sandbox's tools (bubblewrap) are installed when missing, as
// the PostgreSQL and podman helpers install theirs, so that executions run sandboxed in every
// test and no sandbox test can skip.
import { ensureDebianPackages } from "./helpers/debian-packages.js";

export default async function setup(): Promise<void> {
  await ensureDebianPackages(["bubblewrap"]);
}
