// Admission of an execution's or a container's mounts (agentmachine.v1.Mount): each host path is
// resolved on this server's disk and judged as resolved, and the admitted operation keeps the
// resolved path, which is what the attempt binds (src/sandbox/mount-sources.ts checks it again
// then). The order avoids an oracle: a path whose lexical form lies outside the caller's
// prefixes is refused before anything on the disk is looked at, so a caller learns nothing
// about paths it may not mount.
import { realpathSync } from "node:fs";
import { dirname, posix } from "node:path";
import { clone } from "@bufbuild/protobuf";
import { MountSchema, type Mount } from "../gen/agentmachine/v1/operation_pb.js";
import { prefixesCover, underPrefix } from "../governance/attenuation.js";
import type { Principal } from "../governance/authority.js";
import { mountForbidden, outOfScope } from "../governance/errors.js";
import { CONTAINER_WORKSPACE } from "../executors/container-invocation.js";
import { SANDBOX_RUN_DIR } from "../sandbox/bubblewrap-args.js";
import { invalidField } from "../api/errors.js";
import { mountsOnRemoteWorkers } from "../workers/errors.js";

/** Targets the sandbox or the container keeps for itself: its /proc, /dev, the plane's sockets, a container's workspace. */
const reservedTargets = ["/proc", "/dev", SANDBOX_RUN_DIR, CONTAINER_WORKSPACE];

export interface MountAdmission {
  principal: Principal;
  /** The server's data dir: nothing in it, or above it, is ever mounted. */
  dataDir: string;
  /** Whether executions of this kind run on remote workers (their host paths are not this server's). */
  remote: boolean;
}

/** A workspace mount's host path, normalized ("." for the workspace itself), or undefined if it leaves the workspace. */
function workspaceMountPath(hostPath: string): string | undefined {
  const inside = posix.normalize(hostPath);
  return inside === ".." || inside.startsWith("../") ? undefined : inside.replace(/\/$/, "");
}

/**
 * The mounts as the operation records them (host paths resolved), or the refusal: InvalidArgument
 * naming the field for a mount that cannot be (a read-write host path, a reserved target, a
 * path that does not resolve), PermissionDenied naming the `mount_prefixes` axis for a path
 * outside the caller's prefixes, MOUNT_FORBIDDEN for the data dir.
 */
export function admitMounts(mounts: readonly Mount[], field: string, { principal, dataDir, remote }: MountAdmission): Mount[] {
  if (mounts.length > 0 && remote) throw mountsOnRemoteWorkers(field);
  return mounts.map((mount, index) => {
    const at = `${field}[${index}]`;
    if (reservedTargets.some((reserved) => underPrefix(mount.path, reserved))) {
      throw invalidField(`${at}.path`, `must not be under ${reservedTargets.join(", ")}, which the sandbox keeps for itself`);
    }
    if (!mount.hostPath.startsWith("/")) {
      const inside = workspaceMountPath(mount.hostPath);
      if (inside === undefined) throw invalidField(`${at}.host_path`, "a relative host path must stay inside the operation's workspace");
      return clone(MountSchema, { ...mount, hostPath: inside });
    }
    if (mount.readWrite) {
      throw invalidField(
        `${at}.read_write`,
        "only a mount of the operation's own workspace (a relative host_path) may be read-write: the contract allows no external writes",
      );
    }
    return clone(MountSchema, { ...mount, hostPath: resolvedHostPath(mount.hostPath, `${at}.host_path`, principal, dataDir) });
  });
}

/**
 * The path resolved by the system's realpath(3) — Node's own first collapses `link/..` as text,
 * which the kernel does not (it climbs from the link's target) — or, when it does not exist,
 * its deepest ancestor that does. Judging that ancestor keeps "does not exist" from telling
 * whether a file exists behind a link out of the caller's prefixes.
 */
function resolveExisting(hostPath: string): { resolved: string; exists: boolean } {
  for (let current = hostPath; ; current = dirname(current)) {
    try {
      return { resolved: realpathSync.native(current), exists: current === hostPath };
    } catch {
      if (dirname(current) === current) return { resolved: current, exists: false };
    }
  }
}

function resolvedHostPath(hostPath: string, field: string, principal: Principal, dataDir: string): string {
  const { mountPrefixes } = principal.delegation.scope!;
  const delegation = principal.delegation.name;
  if (!prefixesCover(mountPrefixes, posix.resolve(hostPath)))
    throw outOfScope("mount_prefixes", `${field} ${hostPath} is not under its mount_prefixes`, delegation);
  const { resolved, exists } = resolveExisting(hostPath);
  if (!prefixesCover(mountPrefixes, resolved))
    throw outOfScope("mount_prefixes", `${field} ${hostPath} resolves to a path outside its mount_prefixes`, delegation);
  const realDataDir = realpathSync.native(dataDir);
  if (underPrefix(resolved, realDataDir) || underPrefix(realDataDir, resolved)) {
    throw mountForbidden(field, "resolves into the server's data dir (or above it), which is never mounted: it holds the keys, the store and every workspace");
  }
  if (!exists) throw invalidField(field, "does not exist on the server");
  if (resolved.includes(",")) throw invalidField(field, "resolves to a path holding a comma, which a container runtime's --mount cannot take");
  return resolved;
}
