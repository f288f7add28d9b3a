// Consent in plain words, and the grant form's rules: pure functions, no I/O, no crypto, so
// that the sentences a patient reads before signing are tested on their own
// (tests/sharing-text.test.ts). The chain's names stay inside: a patient reads "Lab results
// and measurements", never "diagnostics scope" (SPEC-11, "Principles").

/** The scopes in the order the form shows them (docs/crypto.md 5, `SCOPES`). */
export const SCOPE_ORDER = ["clinical", "diagnostics", "medications", "administrative", "financial", "sensitive"] as const;
export type ScopeName = (typeof SCOPE_ORDER)[number];

/** Checkbox labels. */
export const SCOPE_LABELS: Record<ScopeName, string> = {
  clinical: "Medical history: conditions, allergies, procedures and care plans",
  diagnostics: "Lab results and measurements",
  medications: "Medications and immunisations",
  administrative: "Visits and personal details",
  financial: "Insurance claims and billing",
  sensitive: "Sensitive records (mental health, sexual health, substance use, HIV, genetics, ...)",
};

/** The same scopes as nouns in a sentence: "read your lab results and medications". */
export const SCOPE_NOUNS: Record<ScopeName, string> = {
  clinical: "medical history",
  diagnostics: "lab results",
  medications: "medications",
  administrative: "visits and personal details",
  financial: "insurance and billing records",
  sensitive: "sensitive records",
};

/** FHIR v3 PurposeOfUse codes the chain knows (chain/modules/purposes.py), in plain words:
 * `label` for the form's list, `phrase` after "for" in a sentence. */
export const PURPOSES: { code: string; label: string; phrase: string }[] = [
  { code: "TREAT", label: "Treatment", phrase: "treatment" },
  { code: "ETREAT", label: "Emergency treatment", phrase: "emergency treatment" },
  { code: "HPAYMT", label: "Payment for care", phrase: "payment for your care" },
  { code: "HOPERAT", label: "Running the practice (operations)", phrase: "running the practice" },
  { code: "HRESCH", label: "Research", phrase: "research" },
  { code: "PUBHLTH", label: "Public health", phrase: "public health" },
  { code: "PATRQT", label: "At my request", phrase: "your own request" },
  { code: "COVERAGE", label: "Insurance coverage", phrase: "insurance coverage" },
  { code: "HLEGAL", label: "Legal reasons", phrase: "legal reasons" },
];

export function purposePhrase(code: string): string {
  if (!code) return "no stated purpose";
  return PURPOSES.find((p) => p.code === code)?.phrase ?? code;
}

export function isScope(name: string): name is ScopeName {
  return (SCOPE_ORDER as readonly string[]).includes(name);
}

/** "a", "a and b", "a, b and c". */
export function listInWords(items: string[]): string {
  if (items.length <= 1) return items[0] ?? "";
  return `${items.slice(0, -1).join(", ")} and ${items[items.length - 1]}`;
}

export function scopesInWords(scopes: string[]): string {
  const known = SCOPE_ORDER.filter((s) => scopes.includes(s));
  const unknown = scopes.filter((s) => !isScope(s));
  return listInWords([...known.map((s) => SCOPE_NOUNS[s]), ...unknown]);
}

/** The records a grant covers, with "your": "your lab results and medications"; every broad
 * scope at once is "all your records" (and says whether sensitive ones are in or out). */
export function recordsInWords(scopes: string[]): string {
  const broad = SCOPE_ORDER.filter((s) => s !== "sensitive");
  if (broad.every((s) => scopes.includes(s)) && scopes.every(isScope)) {
    return scopes.includes("sensitive") ? "all your records (sensitive ones included)" : "all your records (not the sensitive ones)";
  }
  return `your ${scopesInWords(scopes)}`;
}

const MONTHS = [
  "January", "February", "March", "April", "May", "June",
  "July", "August", "September", "October", "November", "December",
];

/** "31 March 2027" for a YYYY-MM-DD day (read as a calendar day, no time zone). */
export function dayInWords(day: string): string {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(day);
  if (!match) return day;
  const [, year, month, date] = match;
  return `${Number(date)} ${MONTHS[Number(month) - 1] ?? month} ${year}`;
}

/** The calendar day (UTC) of unix seconds, YYYY-MM-DD. */
export function dayOf(unixSeconds: number): string {
  return new Date(unixSeconds * 1000).toISOString().slice(0, 10);
}

/** An end date as the CLI reads `--until` (consent_cli.parse_until): the grant ends at the end
 * of that day, UTC, so `end` is the first second of the next day. null for no valid day. */
export function endOfDay(day: string): number | null {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(day);
  if (!match) return null;
  const [year, month, date] = [Number(match[1]), Number(match[2]), Number(match[3])];
  const start = Date.UTC(year, month - 1, date);
  const back = new Date(start);
  // Date.UTC rolls 31 February over to March: such a day does not exist.
  if (back.getUTCFullYear() !== year || back.getUTCMonth() !== month - 1 || back.getUTCDate() !== date) return null;
  return start / 1000 + 24 * 3600;
}

/** The last day a grant runs, YYYY-MM-DD: `end` is exclusive (its last second is end - 1). */
export function lastDay(end: number): string {
  return dayOf(end - 1);
}

// --- the grant form -------------------------------------------------------------------------

export interface GrantForm {
  grantee: string; // a did from the list of parties, "" when none chosen
  access: "read" | "write" | "";
  scopes: string[];
  purpose: string; // a PurposeOfUse code
  until: string; // YYYY-MM-DD
}

export type GrantFormErrors = Partial<Record<"grantee" | "access" | "scopes" | "purpose" | "until", string>>;

/** What the chain accepts as a period's end (chain/modules/consent/messages.py). */
const MAX_PERIOD_END = 2 ** 40;

/** Every problem of the form, by field (empty when it may be reviewed and signed). `now` is
 * unix seconds; `parties` the dids one may grant to. */
export function validateGrantForm(form: GrantForm, parties: string[], now: number): GrantFormErrors {
  const errors: GrantFormErrors = {};
  if (!form.grantee) errors.grantee = "Choose who to share with.";
  else if (!parties.includes(form.grantee)) errors.grantee = "Choose an organisation or practitioner from the list.";
  if (form.access !== "read" && form.access !== "write") errors.access = "Choose Read or Write.";
  const unknown = form.scopes.filter((s) => !isScope(s));
  if (form.scopes.length === 0) errors.scopes = "Choose at least one kind of record.";
  else if (unknown.length) errors.scopes = `Unknown kind of record: ${unknown.join(", ")}.`;
  else if (form.access === "write" && form.scopes.includes("sensitive")) {
    errors.scopes =
      "Sensitive records can be shared here for reading only. Untick “Sensitive records”, or choose Read.";
  }
  if (form.access === "read" && !PURPOSES.some((p) => p.code === form.purpose)) {
    errors.purpose = "Choose why they may read your records.";
  }
  errors.until = untilProblem(form.until, now);
  if (!errors.until) delete errors.until;
  return errors;
}

function untilProblem(until: string, now: number): string | undefined {
  if (!until) return "Choose the last day of sharing.";
  const end = endOfDay(until);
  if (end === null) return "Enter a real date (day, month and year).";
  if (end <= now) return "That day has passed: choose today or a later day.";
  if (end >= MAX_PERIOD_END) return "Choose a date before the year 9999.";
  return undefined;
}

export function hasErrors(errors: GrantFormErrors): boolean {
  return Object.keys(errors).length > 0;
}

/** The sentence shown before signing, e.g. "Northside Clinic will be able to read your lab
 * results and medications for treatment until 31 March 2027." */
export function grantSummary(granteeName: string, form: Pick<GrantForm, "access" | "scopes" | "purpose" | "until">): string {
  const what = recordsInWords(form.scopes);
  const until = dayInWords(form.until);
  if (form.access === "write") {
    return `${granteeName} will be able to add new records to ${what} until ${until}.`;
  }
  return `${granteeName} will be able to read ${what} for ${purposePhrase(form.purpose)} until ${until}.`;
}

// --- grants as the patient reads them -------------------------------------------------------

/** A grant as `consent/grants` answers it (chain/modules/consent/keeper.py). */
export interface GrantRow {
  id: string;
  patient: string;
  grantee: string;
  action: string; // read | write | delegate
  scopes: string[];
  records: string[];
  purposes: string[];
  start: number;
  end: number;
  org: string;
  grantor: string;
  delegation: string;
  height: number;
  revoked_at: number;
}

export type GrantState = "active" | "not started" | "ended" | "revoked";

export function grantState(grant: GrantRow, now: number): GrantState {
  if (grant.revoked_at) return "revoked";
  if (grant.end <= now) return "ended";
  if (grant.start > now) return "not started";
  return "active";
}

/** One grant in a sentence: who, may do what, with which records, why, until when. */
export function describeGrant(grant: GrantRow, granteeName: string, now: number): string {
  const what = recordsInWords(grant.scopes);
  const narrowed = grant.records.length ? ` (${grant.records.length} chosen record${grant.records.length > 1 ? "s" : ""} only)` : "";
  const until = dayInWords(lastDay(grant.end));
  const purposes = grant.purposes.length ? ` for ${listInWords(grant.purposes.map(purposePhrase))}` : "";
  const when = grantState(grant, now) === "ended" ? `until ${until} (ended)` : `until ${until}`;
  if (grant.action === "write") return `${granteeName} may add new records to ${what}${narrowed} ${when}.`;
  if (grant.action === "delegate") return `${granteeName} may manage the sharing of ${what} for you ${when}.`;
  return `${granteeName} may read ${what}${narrowed}${purposes} ${when}.`;
}
