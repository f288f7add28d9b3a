// What a person sees of a FHIR resource: one line ("Blood pressure: 130/75 mmHg"), a detail
// line, a category a patient understands and the date it happened. Pure: no DOM, no I/O.
// Synthea (shared/data/synthea-r4/) is what real data looks like here: SNOMED displays with
// semantic tags ("(finding)"), UCUM units ("mm[Hg]", "kg/m2"), blood pressure as components.

export type Resource = Record<string, unknown>;

export const CATEGORIES = [
  "Conditions",
  "Medications",
  "Allergies",
  "Lab results and measurements",
  "Immunisations",
  "Visits",
  "Procedures",
  "Care plans",
  "Billing",
  "Other",
] as const;
export type Category = (typeof CATEGORIES)[number];

const CATEGORY_OF_TYPE: Record<string, Category> = {
  Condition: "Conditions",
  MedicationRequest: "Medications",
  MedicationStatement: "Medications",
  MedicationAdministration: "Medications",
  MedicationDispense: "Medications",
  AllergyIntolerance: "Allergies",
  Observation: "Lab results and measurements",
  DiagnosticReport: "Lab results and measurements",
  ImagingStudy: "Lab results and measurements",
  Immunization: "Immunisations",
  Encounter: "Visits",
  Procedure: "Procedures",
  CarePlan: "Care plans",
  Goal: "Care plans",
  Claim: "Billing",
  ExplanationOfBenefit: "Billing",
  Coverage: "Billing",
};

export interface Display {
  title: string; // the one line a person reads first
  detail: string; // status, dose, reason...: "" when there is nothing more to say
  category: Category;
  date: string | null; // ISO 8601 as the resource states it, null when it states none
}

export function categoryOf(resource: Resource): Category {
  return CATEGORY_OF_TYPE[str(resource.resourceType)] ?? "Other";
}

export function describe(resource: Resource): Display {
  const type = str(resource.resourceType);
  const [title, detail] = (DESCRIBERS[type] ?? describeOther)(resource);
  return { title: title || typeLabel(type), detail, category: categoryOf(resource), date: dateOf(resource) };
}

/** When it happened: the clinical date first (effective, onset, performed, period start),
 * the bookkeeping dates (recorded, issued, created) only when there is none. */
export function dateOf(resource: Resource): string | null {
  for (const field of DATE_FIELDS) {
    const value = resource[field];
    const found = typeof value === "string" ? value : str(obj(value).start);
    if (found) return found;
  }
  return null; // meta.lastUpdated says when a server stored it, not when it happened
}

const DATE_FIELDS = [
  "effectiveDateTime",
  "effectivePeriod",
  "effectiveInstant",
  "occurrenceDateTime",
  "performedDateTime",
  "performedPeriod",
  "onsetDateTime",
  "onsetPeriod",
  "period",
  "billablePeriod",
  "started",
  "authoredOn",
  "startDate",
  "recordedDate",
  "issued",
  "created",
  "statusDate",
  "date",
];

/** "7 June 1991" (a date-only FHIR value stays in its own day, whatever the time zone). */
export function formatDate(iso: string | null): string {
  if (!iso) return "Date unknown";
  const day = /^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?/.exec(iso);
  if (!day) return iso;
  const [, year, month, date] = day;
  if (!month) return year ?? iso;
  const name = MONTHS[Number(month) - 1] ?? month;
  return date ? `${Number(date)} ${name} ${year}` : `${name} ${year}`;
}

const MONTHS = [
  "January",
  "February",
  "March",
  "April",
  "May",
  "June",
  "July",
  "August",
  "September",
  "October",
  "November",
  "December",
];

/** Milliseconds since 1970 for sorting and charts; NaN when the value is no date. */
export function timeOf(iso: string | null): number {
  if (!iso) return Number.NaN;
  return Date.parse(/^\d{4}$/.test(iso) ? `${iso}-01-01` : /^\d{4}-\d{2}$/.test(iso) ? `${iso}-01` : iso);
}

// --- per type ------------------------------------------------------------------------------

type Describer = (resource: Resource) => [string, string];

const DESCRIBERS: Record<string, Describer> = {
  Condition: (r) => [
    concept(r.code),
    joined([statusWord(concept(r.clinicalStatus)), r.abatementDateTime ? `ended ${formatDate(str(r.abatementDateTime))}` : ""]),
  ],
  Observation: (r) => [observationLine(r), observationDetail(r)],
  MedicationRequest: (r) => [
    concept(r.medicationCodeableConcept) || reference(r.medicationReference),
    joined([statusWord(str(r.status)), dosage(r.dosageInstruction)]),
  ],
  MedicationStatement: (r) => [
    concept(r.medicationCodeableConcept) || reference(r.medicationReference),
    joined([statusWord(str(r.status)), dosage(r.dosage)]),
  ],
  AllergyIntolerance: (r) => [
    concept(r.code),
    joined([
      list(r.category).map(str).join(", "),
      r.criticality ? `${str(r.criticality)} risk` : "",
      statusWord(concept(r.clinicalStatus)),
    ]),
  ],
  Immunization: (r) => [concept(r.vaccineCode), statusWord(str(r.status))],
  Encounter: (r) => [
    concept(first(r.type)) || encounterClass(r.class),
    joined([encounterClass(r.class), concept(first(r.reasonCode))]),
  ],
  Procedure: (r) => [concept(r.code), joined([statusWord(str(r.status)), concept(first(r.reasonCode))])],
  DiagnosticReport: (r) => [concept(r.code), resultCount(r.result)],
  ImagingStudy: (r) => [imagingLine(r), statusWord(str(r.status))],
  CarePlan: (r) => [
    list(r.category).map(concept).filter(Boolean).join(", ") || "Care plan",
    joined([statusWord(str(r.status)), ...list(r.activity).map((a) => concept(obj(obj(a).detail).code))]),
  ],
  Goal: (r) => [concept(r.description) || "Goal", statusWord(str(r.lifecycleStatus))],
  Claim: (r) => [`Claim: ${billedFor(r)}`, money(r.total)],
  ExplanationOfBenefit: (r) => [`Insurance statement: ${billedFor(r)}`, paid(r)],
  Patient: (r) => ["Personal details", personName(r.name)],
};

function describeOther(resource: Resource): [string, string] {
  const code = concept(resource.code);
  return [code ? `${typeLabel(str(resource.resourceType))}: ${code}` : "", statusWord(str(resource.status))];
}

// --- observations --------------------------------------------------------------------------

const SYSTOLIC = "8480-6";
const DIASTOLIC = "8462-4";

function observationLine(r: Resource): string {
  const name = concept(r.code);
  const value = observationValue(r);
  return value ? `${name}: ${value}` : name;
}

function observationValue(r: Resource): string {
  const own = valueText(r);
  if (own) return own;
  const parts = list(r.component).map(obj);
  const systolic = parts.find((c) => codeOf(c.code) === SYSTOLIC);
  const diastolic = parts.find((c) => codeOf(c.code) === DIASTOLIC);
  if (systolic && diastolic) {
    const q = obj(systolic.valueQuantity);
    return `${number(obj(systolic.valueQuantity).value)}/${number(obj(diastolic.valueQuantity).value)} ${unit(q)}`.trim();
  }
  return parts
    .map((c) => {
      const value = valueText(c);
      return value ? `${concept(c.code)} ${value}` : "";
    })
    .filter(Boolean)
    .join("; ");
}

/** The value of an Observation or one of its components, with its unit, as text. */
function valueText(r: Resource): string {
  if (r.valueQuantity !== undefined) {
    const q = obj(r.valueQuantity);
    return `${str(q.comparator)}${number(q.value)} ${unit(q)}`.trim();
  }
  if (r.valueCodeableConcept !== undefined) return concept(r.valueCodeableConcept);
  if (typeof r.valueString === "string") return r.valueString;
  if (typeof r.valueBoolean === "boolean") return r.valueBoolean ? "yes" : "no";
  if (typeof r.valueInteger === "number") return String(r.valueInteger);
  return "";
}

function observationDetail(r: Resource): string {
  const categories = list(r.category).map(concept).filter(Boolean);
  return joined([categories.map(plainCategory).join(", "), interpretation(r.interpretation)]);
}

function plainCategory(code: string): string {
  const words: Record<string, string> = {
    "vital-signs": "vital signs",
    laboratory: "lab test",
    survey: "questionnaire",
    "social-history": "social history",
    exam: "examination",
  };
  return words[code] ?? code;
}

function interpretation(value: unknown): string {
  const code = codeOf(first(value));
  const words: Record<string, string> = { H: "high", HH: "very high", L: "low", LL: "very low", N: "normal", A: "abnormal" };
  return words[code] ?? concept(first(value));
}

/** A number as a person reads it: at most two decimals (Synthea writes 176.35499866729558). */
export function number(value: unknown): string {
  if (typeof value !== "number" || !Number.isFinite(value)) return str(value);
  return String(Math.round(value * 100) / 100);
}

/** UCUM as a person writes it: "mm[Hg]" -> "mmHg", "kg/m2" -> "kg/m²", "{score}" -> "". */
export function unit(quantity: Resource): string {
  const raw = str(quantity.unit) || str(quantity.code);
  const known: Record<string, string> = { "mm[Hg]": "mmHg", "kg/m2": "kg/m²", "/min": "per minute", "[degF]": "°F", Cel: "°C", "cel": "°C" };
  if (raw in known) return known[raw] ?? raw;
  return raw
    .replace(/\{([^}]*)\}/g, (_, note: string) => (/score|count/i.test(note) ? "" : note.replace(/_/g, " ").replace(/m2$/, "m²")))
    .replace(/\[([^\]]*)\]/g, "$1")
    .trim();
}

// --- the chart's data ----------------------------------------------------------------------

export interface Series {
  key: string; // code and unit: one code measured in two units is two series
  code: string; // the LOINC code (or the code's text when it has none)
  label: string; // "Body Weight", "Systolic Blood Pressure"
  unit: string;
  points: { date: string; time: number; value: number }[]; // oldest first
}

/** Every numeric measurement over time, one series per code: an Observation's own
 * valueQuantity, and each component of one (blood pressure: systolic and diastolic). */
export function measurementSeries(resources: Resource[]): Series[] {
  const byCode = new Map<string, Series>();
  const add = (code: unknown, quantity: unknown, date: string | null) => {
    const q = obj(quantity);
    const time = timeOf(date);
    if (typeof q.value !== "number" || !Number.isFinite(q.value) || !date || Number.isNaN(time)) return;
    const id = codeOf(code) || concept(code);
    if (!id) return;
    const key = `${id} ${unit(q)}`;
    const series = byCode.get(key) ?? { key, code: id, label: concept(code), unit: unit(q), points: [] };
    byCode.set(key, series);
    series.points.push({ date, time, value: q.value });
  };
  for (const r of resources) {
    if (r.resourceType !== "Observation") continue;
    const date = dateOf(r);
    if (r.valueQuantity !== undefined) add(r.code, r.valueQuantity, date);
    for (const c of list(r.component).map(obj)) add(c.code, c.valueQuantity, date);
  }
  const all = [...byCode.values()].filter((s) => s.points.length > 0);
  for (const s of all) s.points.sort((a, b) => a.time - b.time);
  return all.sort((a, b) => b.points.length - a.points.length || a.label.localeCompare(b.label));
}

// --- small readers of FHIR datatypes --------------------------------------------------------

function str(value: unknown): string {
  return typeof value === "string" ? value : typeof value === "number" ? String(value) : "";
}

function obj(value: unknown): Resource {
  return value !== null && typeof value === "object" && !Array.isArray(value) ? (value as Resource) : {};
}

function list(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

function first(value: unknown): unknown {
  return Array.isArray(value) ? value[0] : value;
}

function joined(parts: string[]): string {
  return parts.filter(Boolean).join(" · ");
}

/** A CodeableConcept (or a bare string) as words: its text, else its first display, else its
 * first code; SNOMED's semantic tag ("(finding)", "(disorder)") dropped. */
export function concept(value: unknown): string {
  if (typeof value === "string") return value;
  const c = obj(value);
  const codings = list(c.coding).map(obj);
  const words = str(c.text) || codings.map((x) => str(x.display)).find(Boolean) || codings.map((x) => str(x.code)).find(Boolean) || "";
  return words.replace(/\s*\((finding|disorder|procedure|situation|observable entity|regime\/therapy|qualifier value|morphologic abnormality|substance|event|record artifact)\)$/, "");
}

/** The LOINC code of a CodeableConcept, else its first code. */
function codeOf(value: unknown): string {
  const codings = list(obj(value).coding).map(obj);
  const loinc = codings.find((x) => str(x.system) === "http://loinc.org");
  return str((loinc ?? codings[0] ?? {}).code);
}

function reference(value: unknown): string {
  return str(obj(value).display) || str(obj(value).reference);
}

function statusWord(status: string): string {
  const words: Record<string, string> = {
    "entered-in-error": "entered in error",
    "not-done": "not done",
    "in-progress": "in progress",
    "on-hold": "on hold",
  };
  return words[status] ?? status;
}

function dosage(value: unknown): string {
  const d = obj(first(value));
  if (str(d.text)) return str(d.text);
  return d.asNeededBoolean === true ? "as needed" : "";
}

function encounterClass(value: unknown): string {
  const code = str(obj(value).code);
  const words: Record<string, string> = {
    AMB: "outpatient visit",
    EMER: "emergency",
    IMP: "hospital stay",
    ACUTE: "hospital stay",
    HH: "home visit",
    VR: "online visit",
    wellness: "check-up",
    ambulatory: "outpatient visit",
    emergency: "emergency",
    inpatient: "hospital stay",
    urgentcare: "urgent care",
  };
  return words[code] ?? (str(obj(value).display) || code);
}

function resultCount(value: unknown): string {
  const n = list(value).length;
  return n === 0 ? "" : n === 1 ? "1 result" : `${n} results`;
}

function imagingLine(r: Resource): string {
  const series = list(r.series).map(obj);
  const parts = series.map((s) => {
    const what = concept(s.modality) || str(obj(s.modality).display);
    const where = str(obj(s.bodySite).display);
    return where ? `${what} of ${where.toLowerCase()}` : what;
  });
  return parts.filter(Boolean).join(", ") || "Imaging study";
}

function billedFor(r: Resource): string {
  const items = list(r.item).map((i) => concept(obj(i).productOrService)).filter(Boolean);
  return items[0] ?? concept(r.type) ?? "";
}

function money(value: unknown): string {
  const m = obj(value);
  if (typeof m.value !== "number") return "";
  return `${m.value.toFixed(2)} ${str(m.currency)}`.trim();
}

function paid(r: Resource): string {
  const payment = money(obj(r.payment).amount);
  const total = list(r.total).map(obj);
  const submitted = total.find((t) => codeOf(t.category) === "submitted");
  return joined([submitted ? `billed ${money(submitted.amount)}` : "", payment ? `paid ${payment}` : ""]);
}

function personName(value: unknown): string {
  const name = obj(first(value));
  if (str(name.text)) return str(name.text);
  return [...list(name.given).map(str), str(name.family)].filter(Boolean).join(" ");
}

/** "DiagnosticReport" -> "Diagnostic report". */
export function typeLabel(type: string): string {
  const words = type.replace(/([a-z])([A-Z])/g, "$1 $2").toLowerCase();
  return words.charAt(0).toUpperCase() + words.slice(1);
}
