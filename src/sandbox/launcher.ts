// The first program in a sandbox: it opens the sandbox's only ways out, then execs the
// execution's own program in its place with exactly the environment it was given.
//
// The sandbox's network namespace has loopback only. For each way out, socat listens on a
// loopback port inside and passes every connection to a unix socket that the plane's side of
// the sandbox serves (SANDBOX_RUN_DIR, bound read-only): `plane.sock` reaches the plane's API,
// so `AMCTL_SERVER=http://127.0.0.1:PORT` works inside unchanged; `egress.sock`, only when the
// operation was granted egress, reaches the plane's egress proxy (HTTP_PROXY/HTTPS_PROXY).
// The program starts once every bridge listens (the launcher reads /proc/net/tcp), so its
// first call never meets a closed port.
//
// Written in Perl (perl-base is Essential on Debian and its derivatives): a shell in between
// would rewrite the program's environment (IFS, PPID, OPTIND, PWD) and drop names that are not
// shell identifiers. The environment arrives on a pipe (ENVIRONMENT_FD, NUL-separated
// NAME=value), never on a command line; the launcher closes that pipe and bwrap's options pipe
// before the exec, and gives the bridges none of the program's descriptors.
import { SANDBOX_RUN_DIR } from "./bubblewrap-args.js";

/** The descriptor the launcher reads the program's environment from. */
export const ENVIRONMENT_FD = 5;
/** bwrap's options pipe (sandbox.ts), still open in the launcher. */
const OPTIONS_FD = 4;

export interface Bridge {
  /** Loopback port inside the sandbox. */
  port: number;
  /** Socket file name in SANDBOX_RUN_DIR. */
  socket: string;
}

const script = `
use strict;
my ($socat, $count) = splice(@ARGV, 0, 2);
my @bridges = splice(@ARGV, 0, 2 * $count);
sub close_fd { my ($fd, $h) = (shift); open($h, "<&=", $fd) and close($h); }
while (my ($port, $socket) = splice(@bridges, 0, 2)) {
  my $pid = fork();
  die "amctl sandbox: cannot start the plane bridge: $!\\n" unless defined $pid;
  if ($pid == 0) {
    open(STDIN, "<", "/dev/null"); open(STDOUT, ">", "/dev/null"); open(STDERR, ">", "/dev/null");
    close_fd($_) for (3, ${OPTIONS_FD}, ${ENVIRONMENT_FD});
    exec($socat, "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr", "UNIX-CONNECT:${SANDBOX_RUN_DIR}/$socket") or exit 127;
  }
  my $want = sprintf("0100007F:%04X", $port);
  my $up = 0;
  for (my $look = 0; !$up && $look < 200000; $look++) {
    open(my $tcp, "<", "/proc/net/tcp") or die "amctl sandbox: /proc/net/tcp: $!\\n";
    while (my $line = <$tcp>) { my @f = split(" ", $line); $up = 1 if $f[1] eq $want && $f[3] eq "0A"; }
    close($tcp);
  }
  die "amctl sandbox: the plane bridge did not start\\n" unless $up;
}
open(my $env, "<&=", ${ENVIRONMENT_FD}) or die "amctl sandbox: no environment: $!\\n";
%ENV = ();
{ local $/ = "\\0"; while (my $pair = <$env>) { chomp($pair); my ($name, $value) = split(/=/, $pair, 2); $ENV{$name} = $value; } }
close($env);
close_fd(${OPTIONS_FD});
exec { $ARGV[0] } @ARGV or do { print STDERR "amctl sandbox: cannot start $ARGV[0]: $!\\n"; exit 127; };
`;

/** `perl -e SCRIPT SOCAT N PORT SOCKET… PROGRAM ARGS…`: the argv that runs `program` once the bridges are up. */
export function launcherArgv(perl: string, socat: string, bridges: readonly Bridge[], program: readonly string[]): string[] {
  return [perl, "-e", script, socat, String(bridges.length), ...bridges.flatMap(({ port, socket }) => [String(port), socket]), ...program];
}

/** The environment as the launcher reads it: NAME=value, each followed by a NUL. */
export function encodeEnvironment(env: Readonly<Record<string, string>>): Buffer {
  return Buffer.from(Object.entries(env).map(([name, value]) => `${name}=${value}\0`).join(""), "utf8");
}
