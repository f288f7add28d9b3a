// Practitioner sign-in: the organisation's SMART backend client key (the page signs the
// client's assertion itself and works through the FHIR gateway), or a practitioner key file
// (the page signs node requests as the practitioner; its organisation's key file opens what
// patients granted). Files are read in the page; no key leaves it.
import { useState } from "preact/hooks";
import { navigate } from "../../app/router";
import { setSession } from "../../app/session";
import { ErrorMessage, Field, Loading, Page } from "../../app/ui";
import { type PractitionerSession, signInWithClientKey, signInWithKey } from "../../wallet/practitioner";
import "./practitioner.css";

function fileOf(event: Event): File | null {
  return (event.currentTarget as HTMLInputElement).files?.[0] ?? null;
}

function signedIn(practitioner: PractitionerSession): void {
  setSession({ kind: "practitioner", practitioner });
  navigate("/practitioner/patients");
}

export function SignIn() {
  return (
    <Page
      title="Clinician sign-in"
      intro="Sign in with your organisation's backend client key, or with your own practitioner key. The key files are read in this page and never sent."
    >
      <div class="signin-grid">
        <ClientKeySignIn />
        <KeyFileSignIn />
      </div>
    </Page>
  );
}

/** A sign-in form's state: on submit, what `missing` names is shown under the key field;
 * otherwise `attempt` signs in, and its error is shown. */
function useSignIn(missing: () => string | undefined, attempt: () => Promise<PractitionerSession>) {
  const [error, setError] = useState<unknown>(null);
  const [fieldError, setFieldError] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const submit = async (event: Event) => {
    event.preventDefault();
    setError(null);
    const problem = missing();
    setFieldError(problem);
    if (problem) return;
    setBusy(true);
    try {
      signedIn(await attempt());
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  };
  return { error, fieldError, busy, submit };
}

/** A key file field whose error (a missing file) is announced with it. */
function KeyFileInput(props: { id: string; label: string; error: string | undefined; onFile: (file: File | null) => void }) {
  return (
    <Field id={props.id} label={props.label} error={props.error}>
      <input
        id={props.id}
        type="file"
        accept=".json,application/json"
        aria-invalid={props.error ? "true" : undefined}
        aria-describedby={props.error ? `${props.id}-error` : undefined}
        onChange={(event) => props.onFile(fileOf(event))}
      />
    </Field>
  );
}

function SignInEnd(props: { error: unknown; busy: boolean; checking: string; submit: string }) {
  return (
    <>
      {props.error ? <ErrorMessage error={props.error} title="Not signed in" /> : null}
      {props.busy ? <Loading what={props.checking} /> : null}
      <div class="actions">
        <button type="submit" disabled={props.busy}>
          {props.submit}
        </button>
      </div>
    </>
  );
}

function ClientKeySignIn() {
  const [file, setFile] = useState<File | null>(null);
  const form = useSignIn(
    () => (file ? undefined : "Choose the client key file (client-….json)."),
    async () => signInWithClientKey(await file!.text()),
  );
  return (
    <form class="card" onSubmit={form.submit} noValidate>
      <h2>Through your organisation's FHIR gateway</h2>
      <p class="hint">
        The backend client key file your organisation registered for you (<span class="mono">careledger clients add --new-key</span>).
        Find patients, read and add records, and break the glass in an emergency.
      </p>
      <KeyFileInput id="client-key" label="Backend client key" error={form.fieldError} onFile={setFile} />
      <SignInEnd error={form.error} busy={form.busy} checking="Signing in" submit="Sign in" />
    </form>
  );
}

function KeyFileSignIn() {
  const [practitioner, setPractitioner] = useState<File | null>(null);
  const [organisation, setOrganisation] = useState<File | null>(null);
  const form = useSignIn(
    () => (practitioner ? undefined : "Choose your practitioner key file."),
    async () => {
      const orgText = organisation ? await organisation.text() : null;
      return signInWithKey(await practitioner!.text(), orgText);
    },
  );
  return (
    <form class="card" onSubmit={form.submit} noValidate>
      <h2>With your practitioner key</h2>
      <p class="hint">See the patients who shared their records with you or your organisation, straight from the ledger.</p>
      <KeyFileInput id="practitioner-key" label="Practitioner key file" error={form.fieldError} onFile={setPractitioner} />
      <Field
        id="organisation-key"
        label="Organisation key file (optional)"
        hint="Patients share their records with your organisation's key: without its key file you see who shared, but cannot open the records."
      >
        <input
          id="organisation-key"
          type="file"
          accept=".json,application/json"
          aria-describedby="organisation-key-hint"
          onChange={(event) => setOrganisation(fileOf(event))}
        />
      </Field>
      <SignInEnd error={form.error} busy={form.busy} checking="Checking your key with the ledger" submit="Sign in with key" />
    </form>
  );
}
