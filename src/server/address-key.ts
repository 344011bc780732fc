// The unit the per-address connection cap counts. An IPv4 address is one; an IPv6 host is
// usually given a whole /64, so counting single IPv6 addresses would let one host take 2^64
// slots. An IPv4 address mapped into IPv6 (a dual-stack listener's view of an IPv4 client) counts
// as the IPv4 address.
import { isIPv4, isIPv6 } from "node:net";

/** The 16-bit groups of an IPv6 address, "::" expanded and an embedded IPv4 tail as two groups. */
function ipv6Groups(address: string): number[] {
  const toGroups = (part: string): number[] =>
    part === ""
      ? []
      : part.split(":").flatMap((group) => {
          if (!isIPv4(group)) return [parseInt(group, 16)];
          const [a, b, c, d] = group.split(".").map(Number) as [number, number, number, number];
          return [(a << 8) | b, (c << 8) | d];
        });
  const [head = "", tail] = address.split("::");
  if (tail === undefined) return toGroups(head);
  const left = toGroups(head);
  const right = toGroups(tail);
  return [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
}

/** `remoteAddress` as counted by the per-address cap: the IPv4 address, or the IPv6 /64 (`2001:db8:0:1::/64`). */
export function addressKey(remoteAddress: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(remoteAddress);
  if (mapped !== null) return mapped[1]!;
  const address = remoteAddress.replace(/%.*$/, ""); // a link-local address's zone
  if (!isIPv6(address)) return address;
  return `${ipv6Groups(address)
    .slice(0, 4)
    .map((group) => group.toString(16))
    .join(":")}::/64`;
}
