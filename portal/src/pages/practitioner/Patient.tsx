// One patient: their records (through the gateway's $everything, or read and opened in the
// page with what the patient granted), forms that add an observation, a condition or a
// medication request (checked here before anything is sent), and the break-glass.
import { useState } from "preact/hooks";
import type { Route } from "../../app/router";
import { Empty, ErrorMessage, Loading, Notice, Page, useAsync } from "../../app/ui";
import { CATEGORIES, describe, formatDate, timeOf } from "../../wallet/fhir-display";
import type { FhirResource, GatewayClient } from "../../wallet/gateway";
import type { KeyPractitioner, SmartPractitioner } from "../../wallet/practitioner";
import { readRecords, type RecordFailure } from "../../wallet/records";
import { BreakGlassPanel } from "./BreakGlassPanel";
import { patientFacts, patientName, SignInFirst, usePractitioner } from "./common";
import { ConditionForm, MedicationForm, ObservationForm } from "./RecordForms";
import "./practitioner.css";

export function PatientPage(props: { route: Route }) {
  const practitioner = usePractitioner();
  const id = props.route.params.get("id");
  const did = props.route.params.get("did");
  if (!practitioner) {
    return (
      <Page title="Patient">
        <SignInFirst />
      </Page>
    );
  }
  if (practitioner.mode === "smart" && id) return <SmartPatient session={practitioner} id={id} />;
  if (practitioner.mode === "key" && did) return <KeyPatient session={practitioner} did={did} />;
  return (
    <Page title="Patient">
      <Empty>
        No patient chosen. <a href="#/practitioner/patients">Find a patient</a>.
      </Empty>
    </Page>
  );
}

type Form = "observation" | "condition" | "medication" | null;

function SmartPatient(props: { session: SmartPractitioner; id: string }) {
  const gateway = props.session.gateway;
  const loaded = useAsync(() => gateway.everything(props.id), [props.id]);
  const [form, setForm] = useState<Form>(null);
  const [saved, setSaved] = useState<string | null>(null);
  const patient = loaded.value?.find((r) => r.resourceType === "Patient" && r.id === props.id);
  const records = (loaded.value ?? []).filter((r) => r !== patient);
  const name = patientName(patient) || "Patient";
  const onSaved = (what: string) => {
    setForm(null);
    setSaved(what);
    loaded.reload();
  };
  const toggle = (which: Form) => {
    setSaved(null);
    setForm(form === which ? null : which);
  };
  return (
    <Page title={name}>
      <p class="patient-facts">{patientFacts(patient, formatDate).join(" · ")}</p>
      <div class="actions" role="group" aria-label="Add to the record">
        <button type="button" class="secondary" aria-expanded={form === "observation"} onClick={() => toggle("observation")}>
          Add observation
        </button>
        <button type="button" class="secondary" aria-expanded={form === "condition"} onClick={() => toggle("condition")}>
          Add condition
        </button>
        <button type="button" class="secondary" aria-expanded={form === "medication"} onClick={() => toggle("medication")}>
          Add medication request
        </button>
      </div>
      {saved ? <Notice kind="success">{saved}</Notice> : null}
      <AddForm form={form} gateway={gateway} patientId={props.id} onSaved={onSaved} onCancel={() => setForm(null)} />
      {/* Above the records, which run to thousands of lines: in an emergency, nobody scrolls. */}
      <BreakGlassPanel gateway={gateway} patientId={props.id} onBroken={() => loaded.reload()} />
      {loaded.loading && !loaded.value ? (
        <Loading what="Reading the patient's records" />
      ) : loaded.error ? (
        <ErrorMessage error={loaded.error} title="The records could not be read" />
      ) : (
        <RecordList records={records} />
      )}
    </Page>
  );
}

function AddForm(props: { form: Form; gateway: GatewayClient; patientId: string; onSaved: (what: string) => void; onCancel: () => void }) {
  const common = { gateway: props.gateway, patientId: props.patientId, onSaved: props.onSaved, onCancel: props.onCancel };
  if (props.form === "observation") return <ObservationForm {...common} />;
  if (props.form === "condition") return <ConditionForm {...common} />;
  if (props.form === "medication") return <MedicationForm {...common} />;
  return null;
}

function KeyPatient(props: { session: KeyPractitioner; did: string }) {
  const { session, did } = props;
  const loaded = useAsync(async () => {
    const identity = await session.node.query<{ name?: string }>("identity", "identity", { did }).catch(() => ({ name: "" }));
    const result = await readRecords(session.node, did, session.keySource, "TREAT", { listings: session.listings });
    return { ...result, name: identity.name ?? "" };
  }, [did]);
  const records = (loaded.value?.records ?? []).map((r) => r.resource as FhirResource);
  const patient = records.find((r) => r.resourceType === "Patient");
  const name = patientName(patient) || loaded.value?.name || "Patient";
  return (
    <Page title={name}>
      {patient ? <p class="patient-facts">{patientFacts(patient, formatDate).join(" · ")}</p> : null}
      {/* Without their Patient record (not shared), the ledger identity is all that says who. */}
      {patient ? null : (
        <p class="patient-facts">
          <span>
            Ledger identity: <span class="mono">{did}</span>
          </span>
        </p>
      )}
      <Notice>
        Signed in with your practitioner key: you read what this patient shared with you, straight from the ledger. To add records or break
        the glass, sign in with your organisation's backend client key.
      </Notice>
      {loaded.loading ? (
        <Loading what="Fetching and opening the records" />
      ) : loaded.error ? (
        <ErrorMessage error={loaded.error} title="The records could not be read" />
      ) : (
        <>
          <Failures failures={loaded.value?.failures ?? []} holdsOrganisationKey={session.organisation !== null} />
          <RecordList records={records.filter((r) => r !== patient)} />
        </>
      )}
    </Page>
  );
}

/** Records not shared with this reader (no key for them, nothing fetched) are said quietly;
 * what failed a check or was refused is a warning. */
function Failures(props: { failures: RecordFailure[]; holdsOrganisationKey: boolean }) {
  const notShared = props.failures.filter((f) => f.kind === "no-key").length;
  const shown = props.failures.filter((f) => f.kind !== "deleted" && f.kind !== "erased" && f.kind !== "no-key");
  if (!shown.length) {
    if (!notShared) return null;
    return (
      <p class="hint">
        {props.holdsOrganisationKey
          ? `${notShared} other record${notShared === 1 ? " is" : "s are"} not shared with you.`
          : "Sign in with your organisation's key file too to open what this patient shared with it."}
      </p>
    );
  }
  const integrity = shown.filter((f) => f.kind === "integrity");
  if (shown.every((f) => f.kind === "denied")) {
    return (
      <div class="alert alert-warning" role="status">
        <p>
          The ledger refused {shown.length === 1 ? "1 record" : `${shown.length} records`}: this patient no longer shares{" "}
          {shown.length === 1 ? "it" : "them"} with you.
        </p>
      </div>
    );
  }
  const counts = new Map<string, number>();
  for (const failure of shown) counts.set(failure.reason, (counts.get(failure.reason) ?? 0) + 1);
  return (
    <div class={integrity.length ? "alert alert-error" : "alert alert-warning"} role={integrity.length ? "alert" : "status"}>
      <p>
        {shown.length} record{shown.length === 1 ? "" : "s"} could not be shown
        {props.holdsOrganisationKey ? "." : ": sign in with your organisation's key file too to open what was shared with it."}
      </p>
      <ul>
        {[...counts].map(([reason, count]) => (
          <li key={reason}>
            {count} × {reason}
          </li>
        ))}
      </ul>
    </div>
  );
}

/** Records shown at first in each category: the newest; the older ones fold away (unless
 * they are so few that folding them hides more than it saves). */
export const RECENT_SHOWN = 5;
const FOLD_AT_LEAST = 3;

/** The records by category (the order of fhir-display's CATEGORIES), newest first in each,
 * with counts; in each category the newest few are shown and the older ones folded (a
 * patient's lab results run to hundreds, and a clinician has minutes). */
export function RecordList(props: { records: FhirResource[] }) {
  if (!props.records.length) return <Empty>No record of this patient that you may read.</Empty>;
  const described = props.records.map((resource) => ({ resource, display: describe(resource) }));
  const byCategory = CATEGORIES.map((category) => ({
    category,
    items: described
      .filter((d) => d.display.category === category)
      .sort((a, b) => (timeOf(b.display.date) || 0) - (timeOf(a.display.date) || 0)),
  })).filter((c) => c.items.length);
  return (
    <section aria-labelledby="records-title">
      <h2 id="records-title" class="records-title">
        Records <span class="muted">({props.records.length})</span>
      </h2>
      <p class="record-counts">{byCategory.map((c) => `${c.category} ${c.items.length}`).join(" · ")}</p>
      {byCategory.map(({ category, items }) => (
        <details key={category} class="category" open>
          <summary class="category-heading">
            {category} <span class="muted">({items.length})</span>
          </summary>
          <RecordItems items={folds(items) ? items.slice(0, RECENT_SHOWN) : items} label={category} />
          {folds(items) ? (
            <details class="older">
              <summary>Show {items.length - RECENT_SHOWN} older</summary>
              <RecordItems items={items.slice(RECENT_SHOWN)} label={`${category}, older`} />
            </details>
          ) : null}
        </details>
      ))}
    </section>
  );
}

function folds(items: unknown[]): boolean {
  return items.length >= RECENT_SHOWN + FOLD_AT_LEAST;
}

function RecordItems(props: { items: { resource: FhirResource; display: ReturnType<typeof describe> }[]; label: string }) {
  return (
    <ul class="record-list" aria-label={props.label}>
      {props.items.map(({ resource, display }) => (
        <li
          key={`${resource.resourceType}/${String(resource.id)}`}
          class="record-item"
          data-testid="record"
          data-resource-type={resource.resourceType}
          data-resource-id={String(resource.id ?? "")}
        >
          <p class="title">{display.title}</p>
          {display.detail ? <p class="detail">{display.detail}</p> : null}
          <p class="when">{formatDate(display.date)}</p>
        </li>
      ))}
    </ul>
  );
}
