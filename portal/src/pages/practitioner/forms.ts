// The practitioner's forms as pure functions: fields in, a FHIR resource out, or every problem
// by field, in words, before anything is sent. The gateway validates again (422 with each
// problem's location); this catches what a person gets wrong first.
import type { FhirResource } from "../../wallet/gateway";

export type FormErrors = Record<string, string>;
export type Built = { ok: true; resource: FhirResource } | { ok: false; errors: FormErrors };

export const LOINC = "http://loinc.org";
export const SNOMED = "http://snomed.info/sct";
export const RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm";

export interface ObservationFields {
  category: string; // vital-signs | laboratory
  code: string; // LOINC
  display: string;
  value: string;
  unit: string;
  date: string; // YYYY-MM-DD
}

export interface ConditionFields {
  code: string; // SNOMED CT
  display: string;
  clinicalStatus: string; // active | recurrence | relapse | inactive | remission | resolved
  onset: string; // YYYY-MM-DD, optional
}

export interface MedicationFields {
  code: string; // RxNorm
  display: string;
  dosage: string; // free text, optional
  authoredOn: string; // YYYY-MM-DD
}

export const OBSERVATION_CATEGORIES: Record<string, string> = { "vital-signs": "Vital signs", laboratory: "Laboratory" };
export const CLINICAL_STATUSES: Record<string, string> = {
  active: "Active",
  recurrence: "Recurrence",
  relapse: "Relapse",
  inactive: "Inactive",
  remission: "Remission",
  resolved: "Resolved",
};

const CODE_FORMATS: Record<string, [RegExp, string]> = {
  [LOINC]: [/^\d{1,7}-\d$/, "a LOINC code looks like 29463-7"],
  [SNOMED]: [/^\d{6,18}$/, "a SNOMED CT code is 6 to 18 digits, like 44054006"],
  [RXNORM]: [/^\d{1,10}$/, "an RxNorm code is digits, like 860975"],
};

/** Today as YYYY-MM-DD in the page's time zone (what a date field shows). */
export function todayOf(now: Date): string {
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${now.getFullYear()}-${pad(now.getMonth() + 1)}-${pad(now.getDate())}`;
}

function checkCode(errors: FormErrors, field: string, value: string, system: string): void {
  const [pattern, hint] = CODE_FORMATS[system]!;
  if (!value.trim()) errors[field] = "Enter the code.";
  else if (!pattern.test(value.trim())) errors[field] = `This is not a valid code: ${hint}.`;
}

function checkText(errors: FormErrors, field: string, value: string, what: string, max = 200): void {
  if (!value.trim()) errors[field] = `Enter ${what}.`;
  else if (value.trim().length > max) errors[field] = `At most ${max} characters.`;
}

function checkDate(errors: FormErrors, field: string, value: string, today: string, required: boolean): void {
  if (!value) {
    if (required) errors[field] = "Enter the date.";
    return;
  }
  if (!/^\d{4}-\d{2}-\d{2}$/.test(value) || Number.isNaN(Date.parse(`${value}T00:00:00Z`))) errors[field] = "Enter a date like 2026-03-31.";
  else if (value > today) errors[field] = "The date cannot be in the future.";
  else if (value < "1900-01-01") errors[field] = "The date is before 1900: check the year.";
}

function coding(system: string, code: string, display: string) {
  return { coding: [{ system, code: code.trim(), display: display.trim() }], text: display.trim() };
}

function done(errors: FormErrors, resource: FhirResource): Built {
  return Object.keys(errors).length ? { ok: false, errors } : { ok: true, resource };
}

export function buildObservation(fields: ObservationFields, patientId: string, now = new Date()): Built {
  const errors: FormErrors = {};
  const today = todayOf(now);
  if (!(fields.category in OBSERVATION_CATEGORIES)) errors.category = "Choose a category.";
  checkCode(errors, "code", fields.code, LOINC);
  checkText(errors, "display", fields.display, "what was measured");
  const value = Number(fields.value.trim().replace(",", "."));
  if (!fields.value.trim()) errors.value = "Enter the value.";
  else if (!Number.isFinite(value)) errors.value = "The value must be a number, like 72.5.";
  else if (Math.abs(value) > 1e9) errors.value = "This value is out of range.";
  checkText(errors, "unit", fields.unit, "the unit, like kg or mmHg", 40);
  checkDate(errors, "date", fields.date, today, true);
  return done(errors, {
    resourceType: "Observation",
    status: "final",
    category: [
      {
        coding: [
          {
            system: "http://terminology.hl7.org/CodeSystem/observation-category",
            code: fields.category,
            display: OBSERVATION_CATEGORIES[fields.category] ?? fields.category,
          },
        ],
      },
    ],
    code: coding(LOINC, fields.code, fields.display),
    subject: { reference: `Patient/${patientId}` },
    effectiveDateTime: fields.date,
    valueQuantity: { value, unit: fields.unit.trim() },
  });
}

export function buildCondition(fields: ConditionFields, patientId: string, now = new Date()): Built {
  const errors: FormErrors = {};
  checkCode(errors, "code", fields.code, SNOMED);
  checkText(errors, "display", fields.display, "the condition's name");
  if (!(fields.clinicalStatus in CLINICAL_STATUSES)) errors.clinicalStatus = "Choose the clinical status.";
  checkDate(errors, "onset", fields.onset, todayOf(now), false);
  const resource: FhirResource = {
    resourceType: "Condition",
    clinicalStatus: {
      coding: [{ system: "http://terminology.hl7.org/CodeSystem/condition-clinical", code: fields.clinicalStatus }],
    },
    verificationStatus: {
      coding: [{ system: "http://terminology.hl7.org/CodeSystem/condition-ver-status", code: "confirmed" }],
    },
    category: [
      {
        coding: [
          { system: "http://terminology.hl7.org/CodeSystem/condition-category", code: "encounter-diagnosis", display: "Encounter Diagnosis" },
        ],
      },
    ],
    code: coding(SNOMED, fields.code, fields.display),
    subject: { reference: `Patient/${patientId}` },
    recordedDate: todayOf(now),
  };
  if (fields.onset) resource.onsetDateTime = fields.onset;
  return done(errors, resource);
}

export function buildMedicationRequest(fields: MedicationFields, patientId: string, now = new Date()): Built {
  const errors: FormErrors = {};
  checkCode(errors, "code", fields.code, RXNORM);
  checkText(errors, "display", fields.display, "the medication's name");
  if (fields.dosage.trim().length > 500) errors.dosage = "At most 500 characters.";
  checkDate(errors, "authoredOn", fields.authoredOn, todayOf(now), true);
  const resource: FhirResource = {
    resourceType: "MedicationRequest",
    status: "active",
    intent: "order",
    medicationCodeableConcept: coding(RXNORM, fields.code, fields.display),
    subject: { reference: `Patient/${patientId}` },
    authoredOn: fields.authoredOn,
  };
  if (fields.dosage.trim()) resource.dosageInstruction = [{ text: fields.dosage.trim() }];
  return done(errors, resource);
}

/** A break-glass reason: 1 to 500 characters, not blank. */
export function reasonError(reason: string): string | null {
  if (!reason.trim()) return "State why you need emergency access: it is recorded and shown to the patient.";
  if (reason.length > 500) return `At most 500 characters (this is ${reason.length}).`;
  return null;
}
