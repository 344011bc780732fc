// /proc parsing on sample text, and how a process group's CPU time is added up from samples of
// its members: every exited process counted once, whoever reaped it, and never going back.
import { describe, expect, it } from "vitest";
import { parseResidentBytes, parseStat } from "../../src/process/proc-stat.js";
import { ProcessGroupSampler, type Member } from "../../src/process/process-group.js";

// Fields 1–24 of proc(5); the name holds spaces and parentheses, as a process may choose.
const RUNNING =
  "4242 (tricky) name) (x) R 4200 4242 4200 0 -1 4194560 1200 300 0 0 150 25 40 10 20 0 3 0 987654 123456789 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
const ZOMBIE = "4243 (sh) Z 4242 4242 4200 0 -1 4227084 90 0 0 0 7 3 0 0 20 0 1 0 987700 0 0 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n";

describe("parseStat", () => {
  it("reads identity, group and CPU times after the last parenthesis of the name", () => {
    expect(parseStat(RUNNING)).toEqual({ pid: 4242, state: "R", ppid: 4200, pgrp: 4242, cpuTicks: 175, childCpuTicks: 50, startTicks: 987654n });
  });

  it("reads a zombie, which keeps its group and times until it is reaped", () => {
    expect(parseStat(ZOMBIE)).toMatchObject({ pid: 4243, state: "Z", pgrp: 4242, cpuTicks: 10, childCpuTicks: 0 });
  });

  it("refuses text that is not a stat line", () => {
    expect(parseStat("")).toBeUndefined();
    expect(parseStat("4242 (cut short) S 1 2 3")).toBeUndefined();
    expect(parseStat("not a pid (x) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5")).toBeUndefined();
  });
});

describe("parseResidentBytes", () => {
  it("reads VmRSS in kB", () => {
    expect(parseResidentBytes("Name:\tnode\nVmHWM:\t  90000 kB\nVmRSS:\t   51200 kB\nRssAnon:\t 40000 kB\n")).toBe(51200 * 1024);
  });

  it("is 0 for a process without memory of its own (a zombie's status has no VmRSS)", () => {
    expect(parseResidentBytes("Name:\tsh\nState:\tZ (zombie)\nThreads:\t1\n")).toBe(0);
  });
});

describe("ProcessGroupSampler", () => {
  const member = (pid: number, ppid: number, cpuTicks: number, childCpuTicks = 0, residentBytes = 0): Member => ({
    pid,
    ppid,
    state: "S",
    pgrp: 10,
    cpuTicks,
    childCpuTicks,
    startTicks: BigInt(pid),
    residentBytes,
  });
  /** A sampler that reads the given samples of group 10, one per call. */
  const samplerOf = (...samples: Member[][]) => {
    const sampler = new ProcessGroupSampler(10, () => samples.shift() ?? []);
    return () => sampler.sample();
  };

  it("sums the members' own and reaped children's CPU time, and their resident memory now", () => {
    const sample = samplerOf([member(10, 1, 5, 7, 1000), member(11, 10, 30, 0, 2000)]);
    expect(sample()).toEqual({ cpuTicks: 42, residentBytes: 3000 });
  });

  it("counts a member reaped by another member once: in its parent's children's time", () => {
    const sample = samplerOf([member(10, 1, 5), member(11, 10, 30)], [member(10, 1, 6, 32)]);
    sample();
    expect(sample().cpuTicks).toBe(38);
  });

  it("keeps what was last seen of a member reaped outside the group (an orphan, reaped by init)", () => {
    const sample = samplerOf(
      [member(10, 1, 5), member(11, 10, 2), member(12, 11, 40)],
      // 11 exited and was reaped by the leader; its child 12 was handed to init.
      [member(10, 1, 5, 2), member(12, 1, 50)],
      // 12 exited; init reaped it.
      [member(10, 1, 5, 2)],
      [member(10, 1, 9, 2)],
    );
    expect(sample().cpuTicks).toBe(47);
    expect(sample().cpuTicks).toBe(57);
    expect(sample().cpuTicks).toBe(57);
    expect(sample().cpuTicks).toBe(61);
  });

  it("keeps what was last seen of the leader when the server reaps it", () => {
    const sample = samplerOf([member(10, 1, 25, 3)], []);
    sample();
    expect(sample()).toEqual({ cpuTicks: 28, residentBytes: 0 });
  });

  it("never goes back, even when a child is reaped without its time reaching its parent (SIGCHLD ignored)", () => {
    const sample = samplerOf([member(10, 1, 5), member(11, 10, 30)], [member(10, 1, 6)], [member(10, 1, 40)]);
    expect(sample().cpuTicks).toBe(35);
    expect(sample().cpuTicks).toBe(35);
    expect(sample().cpuTicks).toBe(40);
  });
});
