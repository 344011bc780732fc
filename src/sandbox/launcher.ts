// The first program in a sandbox: it opens the sandbox's only ways out, then execs the
// execution's own program in its place with exactly the environment it was given.
//
// The sandbox's network namespace has loopback only. For each way out, the launcher listens on
// a loopback port inside and a bridge process passes every connection to a unix socket that the
// plane's side of the sandbox serves (SANDBOX_RUN_DIR, bound read-only): `plane.sock` reaches
// the plane's API, so `AMCTL_SERVER=http://127.0.0.1:PORT` works inside unchanged;
// `egress.sock`, only when the operation was granted egress, reaches the plane's egress proxy
// (HTTP_PROXY/HTTPS_PROXY). The ports listen before the program starts, so its first call never
// meets a closed port.
//
// Written in Perl (perl-base is Essential on Debian and its derivatives): a shell in between
// would rewrite the program's environment (IFS, PPID, OPTIND, PWD) and drop names that are not
// shell identifiers. Everything that differs from one attempt to the next arrives on a pipe
// (LAUNCH_FD, encodeLaunch), never on a command line: the limits, the bridges, the program's
// argv and its environment. So bwrap and the launcher can be started before the attempt is
// known (spare-sandboxes.ts), and no value of the execution's is readable in /proc before the
// program itself runs. The launcher closes that pipe and bwrap's options pipe before the exec,
// and gives the bridge none of the program's descriptors. Without a complete launch (the
// server died before it wrote one) it stops before doing anything.
//
// The bridge is written here rather than run as socat: starting socat and waiting until it
// listened was a third of a sandbox's start-up cost (bench/README.md). It uses no Perl module
// (loading Socket alone costs about 5 ms), hence the Linux constants and sockaddr layouts
// written out. Each connection gets its own process that copies both ways and passes on a
// half-close, as socat's `fork` mode does.
//
// Last before the exec, the launcher sets the program's kernel limits with the prlimit64 system
// call (its number comes from the server, which knows the architecture): RLIMIT_CPU at the
// compute budget, and RLIMIT_NPROC where no pids cgroup caps the sandbox. The bridge was
// started before, so it is not bound by them: a program that exhausts its processes still
// reaches the plane.
import { SANDBOX_RUN_DIR } from "./bubblewrap-args.js";

/** The descriptor the launcher reads its launch from (encodeLaunch). */
export const LAUNCH_FD = 5;
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
my @launch;
{
  open(my $in, "<&=", ${LAUNCH_FD}) or die "amctl sandbox: no launch: $!\\n";
  local $/;
  my $data = <$in>;
  close($in);
  die "amctl sandbox: no launch\\n" unless defined $data && $data =~ /\\0\\z/;
  @launch = split(/\\0/, $data, -1);
  pop(@launch);
}
sub field { die "amctl sandbox: incomplete launch\\n" unless @launch; return shift(@launch); }
my ($prlimit, $cpu, $nproc, $count) = map { field() } 1 .. 4;
my @bridges = map { field() } 1 .. 2 * $count;
my @program = map { field() } 1 .. field();
die "amctl sandbox: no program\\n" unless @program;
my ($AF_UNIX, $AF_INET, $SOCK_STREAM, $SOL_SOCKET, $SO_REUSEADDR) = (1, 2, 1, 1, 2);
sub limit {
  my ($resource, $soft, $hard) = @_;
  syscall($prlimit + 0, 0, $resource, pack("Q2", $soft, $hard), 0) == 0 or die "amctl sandbox: cannot set resource limit $resource: $!\\n";
}
sub close_fd { my ($fd, $h) = (shift); open($h, "<&=", $fd) and close($h); }
sub relay {
  my ($client, $path) = @_;
  socket(my $plane, $AF_UNIX, $SOCK_STREAM, 0) or return;
  connect($plane, pack("S Z108", $AF_UNIX, $path)) or return;
  my %open = (fileno($client) => [$client, $plane], fileno($plane) => [$plane, $client]);
  while (%open) {
    my $ready = "";
    vec($ready, $_, 1) = 1 for keys %open;
    next unless select($ready, undef, undef, undef) > 0;
    for my $fd (keys %open) {
      next unless vec($ready, $fd, 1);
      my ($from, $to) = @{$open{$fd}};
      my $n = sysread($from, my $data, 65536);
      return unless defined $n;
      if ($n == 0) { delete $open{$fd}; shutdown($to, 1); next; }
      for (my $done = 0; $done < $n; ) { my $wrote = syswrite($to, $data, $n - $done, $done); return unless defined $wrote; $done += $wrote; }
    }
  }
}
sub bridge {
  my @listeners = @_;
  open(STDIN, "<", "/dev/null"); open(STDOUT, ">", "/dev/null"); open(STDERR, ">", "/dev/null");
  close_fd($_) for (3, ${OPTIONS_FD});
  $SIG{CHLD} = "IGNORE";
  $SIG{PIPE} = "IGNORE";
  while (1) {
    my $ready = "";
    vec($ready, fileno($_->[0]), 1) = 1 for @listeners;
    next unless select($ready, undef, undef, undef) > 0;
    for my $listener (@listeners) {
      next unless vec($ready, fileno($listener->[0]), 1);
      accept(my $client, $listener->[0]) or next;
      my $pid = fork();
      if (defined $pid && $pid == 0) { close($_->[0]) for @listeners; relay($client, $listener->[1]); exit 0; }
      close($client);
    }
  }
}
my @listeners;
while (my ($port, $socket) = splice(@bridges, 0, 2)) {
  socket(my $listener, $AF_INET, $SOCK_STREAM, 0) or die "amctl sandbox: cannot open the plane bridge: $!\\n";
  setsockopt($listener, $SOL_SOCKET, $SO_REUSEADDR, pack("i", 1));
  bind($listener, pack("S n C4 x8", $AF_INET, $port, 127, 0, 0, 1)) or die "amctl sandbox: cannot listen on 127.0.0.1:$port: $!\\n";
  listen($listener, 128) or die "amctl sandbox: cannot listen on 127.0.0.1:$port: $!\\n";
  push(@listeners, [$listener, "${SANDBOX_RUN_DIR}/$socket"]);
}
if (@listeners) {
  my $pid = fork();
  die "amctl sandbox: cannot start the plane bridge: $!\\n" unless defined $pid;
  if ($pid == 0) { bridge(@listeners); exit 0; }
}
%ENV = ();
for my $pair (@launch) { my ($name, $value) = split(/=/, $pair, 2); $ENV{$name} = $value; }
close_fd(${OPTIONS_FD});
limit(0, $cpu, $cpu + 1) if $cpu > 0;
limit(6, $nproc, $nproc) if $nproc > 0;
exec { $program[0] } @program or do { print STDERR "amctl sandbox: cannot start $program[0]: $!\\n"; exit 127; };
`;

/** The kernel's limits on the program (and what it starts), set by the launcher just before it execs it. */
export interface ProgramLimits {
  /** prlimit64's system call number on this machine. */
  prlimitSyscall: number;
  /** RLIMIT_CPU: soft at this, hard a second later (SIGXCPU names the cause); 0: none. */
  cpuSeconds: number;
  /** RLIMIT_NPROC, the fork-bomb cap where there is no pids cgroup; 0: none. */
  maxProcesses: number;
}

/** `perl -e SCRIPT`: the same for every sandbox; what it runs comes on LAUNCH_FD. */
export function launcherArgv(perl: string): string[] {
  return [perl, "-e", script];
}

export interface Launch {
  limits: ProgramLimits;
  bridges: readonly Bridge[];
  /** The program and its arguments (argv[0] an absolute path). */
  argv: readonly string[];
  env: Readonly<Record<string, string>>;
}

/**
 * What the launcher reads on LAUNCH_FD, each field ended by a NUL: the prlimit64 number, the CPU
 * seconds, the process cap, the number of bridges and each one's port and socket, the number
 * of the program's arguments and each of them, then the environment as NAME=value fields.
 * No field holds a NUL (admission refuses one in argv and the environment).
 */
export function encodeLaunch({ limits, bridges, argv, env }: Launch): Buffer {
  const fields = [
    String(limits.prlimitSyscall),
    String(limits.cpuSeconds),
    String(limits.maxProcesses),
    String(bridges.length),
    ...bridges.flatMap(({ port, socket }) => [String(port), socket]),
    String(argv.length),
    ...argv,
    ...Object.entries(env).map(([name, value]) => `${name}=${value}`),
  ];
  return Buffer.from(fields.map((field) => `${field}\0`).join(""), "utf8");
}
