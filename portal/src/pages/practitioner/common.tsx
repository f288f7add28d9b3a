// What the practitioner pages share: who is signed in, and a patient's name and facts.
import { useSession } from "../../app/session";
import type { FhirResource } from "../../wallet/gateway";
import type { PractitionerSession } from "../../wallet/practitioner";

export function usePractitioner(): PractitionerSession | null {
  const session = useSession();
  return session.kind === "practitioner" ? session.practitioner : null;
}

export function SignInFirst() {
  return (
    <div class="card">
      <p>Sign in as a clinician to see your patients.</p>
      <p>
        <a class="button" href="#/practitioner/sign-in">
          Clinician sign-in
        </a>
      </p>
    </div>
  );
}

/** "Jane Doe", from a FHIR Patient's first name (text, or given names and family). */
export function patientName(patient: FhirResource | undefined): string {
  const names = Array.isArray(patient?.name) ? (patient.name as Record<string, unknown>[]) : [];
  const name = names.find((n) => n.use === "official") ?? names[0];
  if (!name) return "";
  if (typeof name.text === "string" && name.text.trim()) return name.text.trim();
  const given = Array.isArray(name.given) ? name.given.filter((g): g is string => typeof g === "string") : [];
  const family = typeof name.family === "string" ? name.family : "";
  return [...given, family].join(" ").trim();
}

/** "born 7 June 1991 · female" and the like. */
export function patientFacts(patient: FhirResource | undefined, formatDate: (iso: string | null) => string): string[] {
  const facts: string[] = [];
  if (typeof patient?.birthDate === "string") facts.push(`Born ${formatDate(patient.birthDate)}`);
  if (typeof patient?.gender === "string") facts.push(patient.gender.charAt(0).toUpperCase() + patient.gender.slice(1));
  if (patient?.deceasedDateTime || patient?.deceasedBoolean === true) facts.push("Deceased");
  return facts;
}
