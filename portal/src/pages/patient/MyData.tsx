// My data: download every record as a FHIR Bundle (made in this page), and erase records,
// with what erasure does and does not do said before anything is signed.
import { useMemo, useState } from "preact/hooks";
import { useSession } from "../../app/session";
import { UserError } from "../../app/errors";
import { Empty, ErrorMessage, Loading, Notice, Page } from "../../app/ui";
import { eraseRecords } from "../../wallet/erase";
import { downloadJson, exportBundle, exportFileName } from "../../wallet/export";
import type { PatientWallet } from "../../wallet/patient";
import { SignInFirst, useMyRecords, type RecordsState } from "./my-records";
import { Problems } from "./Timeline";
import { erasable, type Erasable } from "./timeline-filters";
import "./records.css";

export function MyData() {
  const session = useSession();
  const wallet = session.kind === "patient" ? session.wallet : null;
  return (
    <Page title="My data" intro="Take a copy of all your records, or erase records you no longer want kept.">
      {wallet ? <MyDataBody wallet={wallet} /> : <SignInFirst what="your data" />}
    </Page>
  );
}

function MyDataBody(props: { wallet: PatientWallet }) {
  const state = useMyRecords(props.wallet);
  // Kept here, above the loading state: an erase reloads the records, which unmounts the
  // sections below while it runs, and the patient must still see what was done.
  const [erased, setErased] = useState<string | null>(null);
  const notice = erased ? <Notice kind="success">{erased}</Notice> : null;
  if (state.loading) {
    return (
      <>
        {notice}
        <Loading what="Opening your records" />
      </>
    );
  }
  if (state.error) {
    return (
      <>
        <ErrorMessage error={state.error} title="Your records could not be read" />
        <button type="button" onClick={state.reload}>
          Try again
        </button>
      </>
    );
  }
  return (
    <>
      {notice}
      <Problems failures={state.result?.failures ?? []} />
      <Download state={state} />
      <Erase wallet={props.wallet} state={state} onErased={setErased} />
    </>
  );
}

function Download(props: { state: RecordsState }) {
  const [done, setDone] = useState<string | null>(null);
  const records = props.state.result?.records ?? [];
  const unreadable = (props.state.result?.failures ?? []).filter((f) => f.kind !== "erased" && f.kind !== "deleted").length;
  const download = () => {
    const now = new Date();
    downloadJson(exportFileName(now), exportBundle(records, now));
    setDone(`Saved ${records.length} ${records.length === 1 ? "record" : "records"} as ${exportFileName(now)}.`);
  };
  return (
    <section class="card data-section" aria-labelledby="download-heading">
      <h2 id="download-heading">Download all my data</h2>
      <p>
        One file with all your records in the FHIR format that hospitals and health apps read (a FHIR Bundle). It is made in this browser from the
        records it opened; keep it safe, because it is not encrypted.
      </p>
      {unreadable ? (
        <p>
          {unreadable === 1 ? "1 record" : `${unreadable} records`} that could not be opened {unreadable === 1 ? "is" : "are"} not in the file.
        </p>
      ) : null}
      <div class="actions">
        <button type="button" onClick={download} disabled={records.length === 0}>
          Download all my data
        </button>
      </div>
      {records.length === 0 && !unreadable ? <Empty>You have no records to download yet.</Empty> : null}
      {done ? <Notice kind="success">{done}</Notice> : null}
    </section>
  );
}

function Erase(props: { wallet: PatientWallet; state: RecordsState; onErased: (message: string) => void }) {
  const [open, setOpen] = useState(false);
  const shown = useMemo(() => erasable(props.state.result ?? { records: [], failures: [] }), [props.state.result]);
  return (
    <section class="card data-section" aria-labelledby="erase-heading">
      <h2 id="erase-heading">Erase records</h2>
      <p>Erasing a record deletes it for good from every node of the ledger. You choose which records on the next step.</p>
      {open ? (
        <EraseForm
          wallet={props.wallet}
          shown={shown}
          onCancel={() => setOpen(false)}
          onErased={(count) => {
            setOpen(false);
            props.onErased(`Erased ${count} ${count === 1 ? "record" : "records"}. The ledger recorded the erasure; each node deletes its copy as it records it.`);
            props.state.reload();
          }}
        />
      ) : (
        <div class="actions">
          <button type="button" class="danger" onClick={() => setOpen(true)} disabled={shown.length === 0}>
            Erase…
          </button>
        </div>
      )}
    </section>
  );
}

function EraseWarning() {
  return (
    <div class="alert alert-warning erase-warning" data-testid="erase-warning">
      <p>
        <strong>Erasure cannot be undone.</strong>
      </p>
      <p>What erasing does:</p>
      <ul>
        <li>Every node of the ledger deletes the encrypted record and the keys that open it. Nobody, you included, can read it again.</li>
        <li>The ledger keeps only a fingerprint of the deleted file and a sealed commitment, which reveal nothing about its content.</li>
        <li>Your clinics can no longer read it through CareLedger.</li>
      </ul>
      <p>What erasing does not do:</p>
      <ul>
        <li>
          It does not reach copies made before: a record a hospital already read may be in its own health record system, and a file you downloaded stays
          on your device.
        </li>
        <li>It does not remove the ledger's entries that a record existed and when it was written or read (the access log).</li>
      </ul>
    </div>
  );
}

function EraseForm(props: { wallet: PatientWallet; shown: Erasable[]; onCancel: () => void; onErased: (count: number) => void }) {
  const [chosen, setChosen] = useState<Set<string>>(new Set());
  const [understood, setUnderstood] = useState(false);
  const [problem, setProblem] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const toggle = (name: string, on: boolean) => {
    const next = new Set(chosen);
    if (on) next.add(name);
    else next.delete(name);
    setChosen(next);
  };
  const submit = async (event: Event) => {
    event.preventDefault();
    setProblem(null);
    if (chosen.size === 0) return setProblem(new UserError("Choose at least one record to erase."));
    if (!understood) return setProblem(new UserError("Tick the box to confirm that you understand erasure cannot be undone."));
    setBusy(true);
    try {
      await eraseRecords(props.wallet.node, [...chosen]);
      props.onErased(chosen.size);
    } catch (error) {
      setProblem(error);
    } finally {
      setBusy(false);
    }
  };
  const allChosen = props.shown.length > 0 && chosen.size === props.shown.length;
  return (
    <form onSubmit={submit} aria-labelledby="erase-heading" noValidate>
      <EraseWarning />
      <fieldset class="erase-choices">
        <legend>Records to erase ({chosen.size} chosen)</legend>
        <label class="check">
          <input
            type="checkbox"
            checked={allChosen}
            onChange={(e) => setChosen((e.target as HTMLInputElement).checked ? new Set(props.shown.map((s) => s.name)) : new Set())}
          />{" "}
          All my records ({props.shown.length})
        </label>
        <ul class="erase-list">
          {props.shown.map((item) => (
            <li key={item.name}>
              <label class="check">
                <input
                  type="checkbox"
                  name="record"
                  value={item.name}
                  checked={chosen.has(item.name)}
                  onChange={(e) => toggle(item.name, (e.target as HTMLInputElement).checked)}
                />{" "}
                <span>
                  {item.title} <span class="muted">({item.detail})</span>
                </span>
              </label>
            </li>
          ))}
        </ul>
      </fieldset>
      <label class="check confirm">
        <input type="checkbox" checked={understood} onChange={(e) => setUnderstood((e.target as HTMLInputElement).checked)} /> I understand that erasure
        cannot be undone
      </label>
      {problem ? <ErrorMessage error={problem} title="Nothing was erased" /> : null}
      <div class="actions">
        <button type="submit" class="danger" disabled={busy}>
          Erase records
        </button>
        <button type="button" class="secondary" onClick={props.onCancel} disabled={busy}>
          Cancel
        </button>
      </div>
      {busy ? <Loading what="Signing and recording the erasure" /> : null}
    </form>
  );
}
