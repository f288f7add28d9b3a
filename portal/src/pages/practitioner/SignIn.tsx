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

function ClientKeySignIn() {
  const [file, setFile] = useState<File | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [fieldError, setFieldError] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const submit = async (event: Event) => {
    event.preventDefault();
    setError(null);
    if (!file) return setFieldError("Choose the client key file (client-….json).");
    setFieldError(undefined);
    setBusy(true);
    try {
      signedIn(await signInWithClientKey(await file.text()));
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="card" onSubmit={submit} noValidate>
      <h2>Through your organisation's FHIR gateway</h2>
      <p class="hint">
        The backend client key file your organisation registered for you (<span class="mono">careledger clients add --new-key</span>).
        Find patients, read and add records, and break the glass in an emergency.
      </p>
      <Field id="client-key" label="Backend client key" error={fieldError}>
        <input
          id="client-key"
          type="file"
          accept=".json,application/json"
          aria-invalid={fieldError ? "true" : undefined}
          aria-describedby={fieldError ? "client-key-error" : undefined}
          onChange={(event) => setFile(fileOf(event))}
        />
      </Field>
      {error ? <ErrorMessage error={error} title="Not signed in" /> : null}
      {busy ? <Loading what="Signing in" /> : null}
      <div class="actions">
        <button type="submit" disabled={busy}>
          Sign in
        </button>
      </div>
    </form>
  );
}

function KeyFileSignIn() {
  const [practitioner, setPractitioner] = useState<File | null>(null);
  const [organisation, setOrganisation] = useState<File | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [fieldError, setFieldError] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const submit = async (event: Event) => {
    event.preventDefault();
    setError(null);
    if (!practitioner) return setFieldError("Choose your practitioner key file.");
    setFieldError(undefined);
    setBusy(true);
    try {
      const orgText = organisation ? await organisation.text() : null;
      signedIn(await signInWithKey(await practitioner.text(), orgText));
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="card" onSubmit={submit} noValidate>
      <h2>With your practitioner key</h2>
      <p class="hint">See the patients who shared their records with you or your organisation, straight from the ledger.</p>
      <Field id="practitioner-key" label="Practitioner key file" error={fieldError}>
        <input
          id="practitioner-key"
          type="file"
          accept=".json,application/json"
          aria-invalid={fieldError ? "true" : undefined}
          aria-describedby={fieldError ? "practitioner-key-error" : undefined}
          onChange={(event) => setPractitioner(fileOf(event))}
        />
      </Field>
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
      {error ? <ErrorMessage error={error} title="Not signed in" /> : null}
      {busy ? <Loading what="Checking your key with the ledger" /> : null}
      <div class="actions">
        <button type="submit" disabled={busy}>
          Sign in with key
        </button>
      </div>
    </form>
  );
}
