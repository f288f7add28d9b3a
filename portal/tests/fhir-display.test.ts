// fhir-display over real Synthea resources (shared/data/synthea-r4/): what a patient reads.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import {
  CATEGORIES,
  categoryOf,
  dateOf,
  describe as display,
  formatDate,
  measurementSeries,
  type Resource,
  unit,
} from "../src/wallet/fhir-display";

/** The shared data as demo.shared_data() finds it: $CARELEDGER_SHARED_DATA, else `shared/data`
 * beside the checkout (this worktree's parent), else the project's shared directory. */
function sharedData(): string {
  const candidates = [
    process.env.CARELEDGER_SHARED_DATA ?? "",
    resolve(__dirname, "../../../shared/data"),
    "/work/shared/data",
  ];
  const found = candidates.find((dir) => dir && existsSync(join(dir, "synthea-r4")));
  if (!found) throw new Error(`no shared/data/synthea-r4 in ${candidates.join(", ")}`);
  return join(found, "synthea-r4");
}

const SYNTHEA = sharedData();
const ALL: Resource[] = readdirSync(SYNTHEA)
  .filter((name) => name.endsWith(".json"))
  .flatMap((name) => {
    const bundle = JSON.parse(readFileSync(join(SYNTHEA, name), "utf8")) as { entry?: { resource: Resource }[] };
    return (bundle.entry ?? []).map((entry) => entry.resource);
  });

function byId(id: string): Resource {
  const found = ALL.find((r) => r.id === id);
  if (!found) throw new Error(`no Synthea resource ${id}`);
  return found;
}

describe("describe() on real Synthea resources", () => {
  it("shows an observation's value rounded, with its unit", () => {
    const height = byId("af5597a6-304d-4c8f-b596-60d17d445714"); // Body Height 176.35499866729558 cm
    expect(display(height)).toMatchObject({
      title: "Body Height: 176.35 cm",
      category: "Lab results and measurements",
      date: "2011-10-14T23:37:54+00:00",
    });
    expect(display(height).detail).toBe("vital signs");
  });

  it("shows blood pressure as systolic/diastolic from its components", () => {
    const bp = byId("f13d3b8d-0097-4b35-8d6e-31c73ac2601c");
    expect(display(bp).title).toBe("Blood Pressure: 129.74/75.44 mmHg");
  });

  it("shows a coded observation value as words", () => {
    const smoking = byId("df88b50e-56ed-4c3f-b74a-363daa679cf7");
    expect(display(smoking).title).toBe("Tobacco smoking status NHIS: Never smoker");
    expect(display(smoking).detail).toBe("questionnaire");
  });

  it("names the medication, its status and how it is taken", () => {
    const ibuprofen = byId("288b3dc6-1b86-4447-8826-8eb2de56b933");
    expect(display(ibuprofen)).toMatchObject({
      title: "Ibuprofen 200 MG Oral Tablet",
      detail: "stopped · as needed",
      category: "Medications",
      date: "2017-03-21T23:37:54+00:00",
    });
  });

  it("names the vaccine of an immunisation", () => {
    const flu = byId("2c074792-6eab-473d-9574-c68436bfa56e");
    expect(display(flu)).toMatchObject({
      title: "Influenza, seasonal, injectable, preservative free",
      category: "Immunisations",
      date: "2011-10-14T23:37:54+00:00",
    });
  });

  it("drops SNOMED's semantic tags from conditions, visits and procedures", () => {
    const obesity = byId("e5e50c51-acd9-4716-b4dc-4e245ca9f8c2");
    expect(display(obesity)).toMatchObject({ title: "Body mass index 30+ - obesity", detail: "active", category: "Conditions" });
    const checkup = byId("abbc5979-3aca-43fe-91a6-8065b7e4a90f");
    expect(display(checkup)).toMatchObject({
      title: "Encounter for check up",
      detail: "outpatient visit",
      category: "Visits",
      date: "1991-06-07T23:37:54+00:00",
    });
    const colonoscopy = byId("4df91bab-a20c-49f0-a66c-3d0e3f4fd0d2");
    expect(display(colonoscopy)).toMatchObject({
      title: "Colonoscopy",
      category: "Procedures",
      date: "2012-11-25T23:37:54+00:00",
    });
  });

  it("shows an allergy with its kind and risk", () => {
    const mould = byId("806fc0a2-4f3c-4fc8-88c9-1bbd1e29fde8");
    expect(display(mould)).toMatchObject({
      title: "Allergy to mould",
      detail: "food · low risk · active",
      category: "Allergies",
    });
  });

  it("counts a lab report's results, and puts claims and statements under Billing", () => {
    const lipids = byId("e2226510-ab31-4d82-b5fc-54cc95dc6c89");
    expect(display(lipids)).toMatchObject({ title: "Lipid Panel", detail: "4 results" });
    const claim = byId("a37ffc2e-7d4f-4e91-8bd9-1f22e96418bf");
    expect(display(claim)).toMatchObject({ title: "Claim: Encounter for check up", detail: "125.00 USD", category: "Billing" });
    const eob = byId("f6f0fdfd-6c1e-4362-ac4f-bb47137304cb");
    expect(display(eob).category).toBe("Billing");
    expect(display(eob).title).toBe("Insurance statement: Encounter for check up");
  });

  it("describes imaging by modality and body site", () => {
    const xray = byId("16c51b9e-eda5-42c4-87ae-e549099c4b25");
    expect(display(xray).title).toBe("Digital Radiography of knee");
  });

  it("gives every Synthea resource a non-empty title, a known category and a date", () => {
    const records = ALL.filter((r) => !["Organization", "Practitioner"].includes(String(r.resourceType)));
    expect(records.length).toBeGreaterThan(9000);
    for (const resource of records) {
      const shown = display(resource);
      expect(shown.title, `${String(resource.resourceType)}/${String(resource.id)}`).not.toBe("");
      expect(shown.title).not.toMatch(/undefined|\[object/);
      expect(CATEGORIES).toContain(shown.category);
      // Synthea's Patient and Goal resources state no date of their own.
      if (!["Patient", "Goal"].includes(String(resource.resourceType))) {
        expect(shown.date, `${String(resource.resourceType)}/${String(resource.id)}`).toMatch(/^\d{4}-\d{2}-\d{2}/);
      }
    }
  });
});

describe("dates, categories and units", () => {
  it("formats FHIR dates without shifting the day", () => {
    expect(formatDate("1991-06-07T23:37:54+00:00")).toBe("7 June 1991");
    expect(formatDate("2019-09-30T03:19:07-04:00")).toBe("30 September 2019");
    expect(formatDate("2020-02")).toBe("February 2020");
    expect(formatDate(null)).toBe("Date unknown");
  });

  it("prefers the clinical date over the bookkeeping one", () => {
    expect(dateOf({ resourceType: "Observation", issued: "2020-01-02", effectiveDateTime: "2019-12-31" })).toBe("2019-12-31");
    expect(dateOf({ resourceType: "Goal" })).toBeNull();
  });

  it("files an unknown type under Other", () => {
    expect(categoryOf({ resourceType: "Flag" })).toBe("Other");
    expect(display({ resourceType: "Flag", code: { text: "Fall risk" } }).title).toBe("Flag: Fall risk");
  });

  it("writes UCUM units as people do", () => {
    expect(unit({ unit: "mm[Hg]" })).toBe("mmHg");
    expect(unit({ unit: "kg/m2" })).toBe("kg/m²");
    expect(unit({ unit: "{score}" })).toBe("");
    expect(unit({ unit: "mL/min/{1.73_m2}" })).toBe("mL/min/1.73 m²");
  });
});

describe("measurementSeries", () => {
  const patient = ALL.filter((r) => JSON.stringify(r).includes("018f428e-34f6-4707-8009-5ad742f901e7"));

  it("makes one series per LOINC code, oldest first, with blood pressure split in two", () => {
    const series = measurementSeries(patient);
    const codes = series.map((s) => s.code);
    expect(codes).toEqual(expect.arrayContaining(["29463-7", "39156-5", "8480-6", "8462-4"]));
    const weight = series.find((s) => s.code === "29463-7");
    expect(weight?.unit).toBe("kg");
    const times = weight?.points.map((p) => p.time) ?? [];
    expect(times.length).toBeGreaterThan(1);
    expect([...times].sort((a, b) => a - b)).toEqual(times);
    const systolic = series.find((s) => s.code === "8480-6");
    expect(systolic?.label).toBe("Systolic Blood Pressure");
    expect(systolic?.unit).toBe("mmHg");
    expect(series.find((s) => s.code === "55284-4")).toBeUndefined(); // the panel has no value of its own
  });

  it("keeps one code measured in two units apart", () => {
    const series = measurementSeries(ALL).filter((s) => s.code === "33914-3");
    expect(series.map((s) => s.unit).sort()).toEqual(["mL/min", "mL/min/1.73 m²"]);
  });

  it("leaves out coded values and observations without a date", () => {
    const series = measurementSeries([
      { resourceType: "Observation", code: { coding: [{ system: "http://loinc.org", code: "1" }] }, valueCodeableConcept: { text: "x" }, effectiveDateTime: "2020-01-01" },
      { resourceType: "Observation", code: { coding: [{ system: "http://loinc.org", code: "2" }] }, valueQuantity: { value: 3, unit: "kg" } },
    ]);
    expect(series).toEqual([]);
  });
});
