// TalliedCounter: series counted as plain numbers and handed to prom-client at scrape time must
// read exactly as prom-client's own counters would: one series per label set, at 0 from when it
// is made, each scrape showing the counts so far (not only what changed since the last one).
import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { TalliedCounter } from "../../src/metrics/tallied-counter.js";
import { parseExposition, total } from "../helpers/prometheus.js";

async function read(registry: Registry) {
  return parseExposition(await registry.metrics());
}

describe("TalliedCounter", () => {
  it("counts each label set in a series of its own, the same tally for the same values, shown at 0 until counted", async () => {
    const registry = new Registry();
    const counter = new TalliedCounter({ name: "calls_total", help: "Calls.", labelNames: ["method", "code"], registers: [registry] });
    const okA = counter.tally({ method: "A", code: "OK" });
    expect(counter.tally({ code: "OK", method: "A" })).toBe(okA);
    const deniedA = counter.tally({ method: "A", code: "PermissionDenied" });
    const okB = counter.tally({ method: "B", code: "OK" });

    let exposition = await read(registry);
    expect(exposition.types.get("calls_total")).toBe("counter");
    expect(exposition.samples.filter((sample) => sample.name === "calls_total")).toHaveLength(3);
    expect(total(exposition, "calls_total")).toBe(0);

    okA.value += 1;
    okA.value += 1;
    deniedA.value += 1;
    okB.value += 5;
    exposition = await read(registry);
    expect(total(exposition, "calls_total", { method: "A", code: "OK" })).toBe(2);
    expect(total(exposition, "calls_total", { method: "A", code: "PermissionDenied" })).toBe(1);
    expect(total(exposition, "calls_total", { method: "A" })).toBe(3);
    expect(total(exposition, "calls_total", { method: "B" })).toBe(5);

    // A second scrape shows the totals again, plus what came since.
    okB.value += 1;
    exposition = await read(registry);
    expect(total(exposition, "calls_total", { method: "B" })).toBe(6);
    expect(total(exposition, "calls_total")).toBe(9);
  });

  it("a counter without labels has one series", async () => {
    const registry = new Registry();
    const counter = new TalliedCounter({ name: "ticks_total", help: "Ticks.", registers: [registry] });
    counter.tally({}).value += 4;
    counter.tally({}).value += 1;
    const exposition = await read(registry);
    expect(exposition.samples.filter((sample) => sample.name === "ticks_total")).toEqual([{ name: "ticks_total", labels: {}, value: 5 }]);
  });
});
