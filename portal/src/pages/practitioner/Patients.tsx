// Find a patient: through the gateway (SMART sign-in), a FHIR search by name of the patients the
// organisation knows; with a practitioner key, the patients who granted it (or its
// organisation) access, from the ledger.
import { useState } from "preact/hooks";
import { Empty, ErrorMessage, Field, Loading, Page, useAsync } from "../../app/ui";
import { formatDate } from "../../wallet/fhir-display";
import { grantingPatients, type KeyPractitioner, type SmartPractitioner } from "../../wallet/practitioner";
import { patientFacts, patientName, SignInFirst, usePractitioner } from "./common";
import "./practitioner.css";

export function Patients() {
  const practitioner = usePractitioner();
  const intro =
    practitioner?.mode === "key"
      ? "The patients who shared their records with you or your organisation."
      : "Patients your organisation knows. What you may read of each is what they consented to; every read is recorded in their access log.";
  return (
    <Page title="Patients" intro={intro}>
      {!practitioner ? <SignInFirst /> : practitioner.mode === "smart" ? <SmartPatients session={practitioner} /> : <GrantingPatients session={practitioner} />}
    </Page>
  );
}

function SearchForm(props: { onSearch: (name: string) => void; live?: boolean }) {
  const [name, setName] = useState("");
  return (
    <form
      role="search"
      class="search-row"
      onSubmit={(event) => {
        event.preventDefault();
        props.onSearch(name);
      }}
    >
      <Field id="patient-search" label="Search patients">
        <input
          id="patient-search"
          type="search"
          value={name}
          autoComplete="off"
          placeholder="Name"
          onInput={(event) => {
            const value = (event.currentTarget as HTMLInputElement).value;
            setName(value);
            if (props.live) props.onSearch(value);
          }}
        />
      </Field>
      <button type="submit">Search</button>
    </form>
  );
}

function SmartPatients(props: { session: SmartPractitioner }) {
  const [query, setQuery] = useState("");
  const found = useAsync(() => props.session.gateway.searchPatients(query), [query]);
  return (
    <>
      <SearchForm onSearch={setQuery} />
      {found.loading ? (
        <Loading what="Searching" />
      ) : found.error ? (
        <ErrorMessage error={found.error} title="The search failed" />
      ) : !found.value?.length ? (
        <Empty>{query ? `No patient named “${query}”.` : "Your organisation knows no patient yet."}</Empty>
      ) : (
        <ul class="patient-list" aria-label="Patients found">
          {found.value.map((patient) => (
            <li key={patient.id}>
              <a href={`#/practitioner/patient?id=${encodeURIComponent(String(patient.id))}`}>
                <strong>{patientName(patient) || `Patient ${String(patient.id)}`}</strong>
                <span>{patientFacts(patient, formatDate).join(" · ")}</span>
              </a>
            </li>
          ))}
        </ul>
      )}
    </>
  );
}

function GrantingPatients(props: { session: KeyPractitioner }) {
  const [query, setQuery] = useState("");
  const found = useAsync(() => grantingPatients(props.session), [props.session.did]);
  const wanted = query.trim().toLowerCase();
  const shown = (found.value ?? []).filter((p) => !wanted || p.name.toLowerCase().includes(wanted) || p.did.includes(wanted));
  return (
    <>
      <SearchForm onSearch={setQuery} live />
      {found.loading ? (
        <Loading what="Asking the ledger who shared with you" />
      ) : found.error ? (
        <ErrorMessage error={found.error} title="The ledger could not be asked" />
      ) : !shown.length ? (
        <Empty>{wanted ? `No patient matching “${query}” shared with you.` : "No patient has shared their records with you or your organisation yet."}</Empty>
      ) : (
        <ul class="patient-list" aria-label="Patients who shared with you">
          {shown.map((patient) => (
            <li key={patient.did}>
              <a href={`#/practitioner/patient?did=${encodeURIComponent(patient.did)}`}>
                {/* Patients' names are in their encrypted records, not on the ledger. */}
                <strong>{patient.name || "Patient (name not on the ledger)"}</strong>
                <span>
                  Ledger identity: <span class="mono">{patient.did}</span>
                </span>
              </a>
            </li>
          ))}
        </ul>
      )}
    </>
  );
}
