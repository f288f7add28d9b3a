// The Timeline's order and filters and the chart's geometry: pure logic over real Synthea data.
import { existsSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { measurementSeries, type Resource } from "../src/wallet/fhir-display";
import type { DecryptedRecord } from "../src/wallet/records";
import { chartGeometry, niceTicks } from "../src/pages/patient/chart-geometry";
import { applyFilters, byDay, erasable, shownRecords } from "../src/pages/patient/timeline-filters";

const BUNDLE = "synthea-r4/Abdul_Koepp_e925b0f3-8006-43f6-aa31-94bd215e55e7.json";
const DATA = [process.env.CARELEDGER_SHARED_DATA ?? "", resolve(__dirname, "../../../shared/data"), "/work/shared/data"].find(
  (dir) => dir && existsSync(resolve(dir, BUNDLE)),
);
if (!DATA) throw new Error(`no shared data holding ${BUNDLE}`);
const resources = (JSON.parse(readFileSync(resolve(DATA, BUNDLE), "utf8")) as { entry: { resource: Resource }[] }).entry
  .map((e) => e.resource)
  .filter((r) => !["Organization", "Practitioner"].includes(String(r.resourceType)));

const records: DecryptedRecord[] = resources.map((resource, i) => ({
  name: i.toString(16).padStart(64, "0"),
  version: 1,
  resourceType: String(resource.resourceType),
  id: String(resource.id),
  resource,
  author: "did:key:zAuthor",
  height: i + 1,
  blobHash: "",
  erased: false,
}));

describe("timeline order and filters", () => {
  const shown = shownRecords(records);

  it("puts the newest record first and undated ones last", () => {
    const dated = shown.filter((s) => s.date);
    const times = dated.map((s) => Date.parse(s.date!));
    expect(times).toEqual([...times].sort((a, b) => b - a));
    expect(shown[shown.length - 1]!.date).toBeNull(); // the Patient resource states no date
    expect(shown.length).toBe(records.length);
  });

  it("keeps one category", () => {
    const shots = applyFilters(shown, { category: "Immunisations", from: "", to: "" });
    expect(shots.length).toBe(11);
    expect(shots.every((s) => s.record.resourceType === "Immunization")).toBe(true);
  });

  it("keeps a date range, the last day included, and drops undated records", () => {
    const kept = applyFilters(shown, { category: "", from: "2011-10-14", to: "2011-10-14" });
    expect(kept.length).toBeGreaterThan(0);
    expect(kept.every((s) => s.date!.startsWith("2011-10-14"))).toBe(true);
    const all = applyFilters(shown, { category: "", from: "1900-01-01", to: "" });
    expect(all.length).toBe(shown.filter((s) => s.date).length);
  });

  it("groups the records of one day under one heading, days newest first", () => {
    const groups = byDay(shown);
    expect(groups.flatMap((g) => g.items)).toEqual(shown);
    const days = groups.map((g) => g.day);
    expect(new Set(days).size).toBe(days.length);
    expect(groups.every((g) => g.items.every((i) => (i.date ? i.date.slice(0, 10) : null) === g.day))).toBe(true);
    expect(days[days.length - 1]).toBeNull();
  });

  it("keeps nothing for a range that ends before it starts", () => {
    expect(applyFilters(shown, { category: "", from: "2015-01-01", to: "2014-01-01" })).toEqual([]);
  });
});

describe("chart geometry", () => {
  it("chooses round ticks that cover the data", () => {
    expect(niceTicks(0, 10, 5)).toEqual([0, 5, 10]);
    const ticks = niceTicks(72.3, 88.9, 5);
    expect(ticks[0]).toBeLessThanOrEqual(72.3);
    expect(ticks[ticks.length - 1]).toBeGreaterThanOrEqual(88.9);
    const steps = ticks.slice(1).map((t, i) => Number((t - ticks[i]!).toPrecision(6)));
    expect(new Set(steps).size).toBe(1);
    expect([1, 2, 5, 10]).toContain(steps[0]);
    expect(niceTicks(5, 5, 5).length).toBeGreaterThan(1); // one value still gets an axis
    expect(niceTicks(80.28, 84.37, 5)).toEqual([80, 82, 84, 86]); // the top value is under the top tick
  });

  it("places the body weights of a Synthea patient inside the plot, oldest on the left", () => {
    const weight = measurementSeries(resources).find((s) => s.code === "29463-7")!;
    const g = chartGeometry(weight.points);
    expect(g.points.length).toBe(weight.points.length);
    for (const p of g.points) {
      expect(p.x).toBeGreaterThanOrEqual(g.left);
      expect(p.x).toBeLessThanOrEqual(g.width - g.right);
      expect(p.y).toBeGreaterThanOrEqual(g.top);
      expect(p.y).toBeLessThanOrEqual(g.height - g.bottom);
    }
    const xs = g.points.map((p) => p.x);
    expect(xs).toEqual([...xs].sort((a, b) => a - b));
    const heaviest = weight.points.findIndex((p) => p.value === g.max);
    expect(g.points[heaviest]!.y).toBe(Math.min(...g.points.map((p) => p.y))); // highest value, highest on screen
    expect(g.xTicks.every((t) => /^\d{4}$|^[A-Z][a-z]{2} \d{4}$/.test(t.label))).toBe(true);
  });

  it("draws a single measurement without dividing by zero", () => {
    const g = chartGeometry([{ time: Date.parse("2020-05-01"), value: 70 }]);
    expect(Number.isFinite(g.points[0]!.x) && Number.isFinite(g.points[0]!.y)).toBe(true);
  });
});

describe("erasable", () => {
  it("offers the opened records and every unopened one not erased yet, by type", () => {
    const failure = (name: string, kind: "erased" | "deleted" | "integrity") => ({
      name,
      resourceType: "DiagnosticReport",
      kind,
      reason: "",
    });
    const choices = erasable({
      records: records.slice(0, 2),
      failures: [failure("a".repeat(64), "integrity"), failure("b".repeat(64), "erased"), failure("c".repeat(64), "deleted")],
    });
    expect(choices.map((c) => c.name)).toEqual([
      ...shownRecords(records.slice(0, 2)).map((s) => s.name),
      "a".repeat(64),
      "c".repeat(64),
    ]);
    expect(choices[2]).toMatchObject({ title: "Diagnostic report record", detail: "could not be opened, aaaaaaaa…" });
  });
});
