// Opening a key file CareLedger saved (careledger keys new, or a claim).
import { useRef, useState } from "preact/hooks";
import { Field } from "../../../app/ui";
import { openKeyFile } from "../../../wallet/onboarding";
import { finish, FormEnd, readSmallFile, useNewPassphrase } from "./common";

export function KeyFileFlow() {
  const fileRef = useRef<HTMLInputElement>(null);
  const newPassphrase = useNewPassphrase("keyfile");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);

  async function submit(event: Event) {
    event.preventDefault();
    setError(null);
    const passphraseOk = newPassphrase.check();
    setBusy(true);
    try {
      const text = await readSmallFile(fileRef.current, "key file");
      if (!passphraseOk) return;
      const { keys, node } = await openKeyFile(text);
      await finish(keys, newPassphrase.passphrase, node);
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  }

  return (
    <form onSubmit={submit} noValidate>
      <h2>Open a key file</h2>
      <p>The key file CareLedger saved for you (for example by <span class="mono">careledger keys new</span> or a claim).</p>
      <Field id="keyfile" label="Key file">
        <input id="keyfile" type="file" accept=".json,application/json" ref={fileRef} />
      </Field>
      {newPassphrase.fields}
      <FormEnd error={error} busy={busy ? "Opening your key file" : null} submit="Open key file" />
    </form>
  );
}
