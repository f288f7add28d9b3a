// Restoring an identity from its recovery phrase.
import { useState } from "preact/hooks";
import { UserError } from "../../../app/errors";
import { Field } from "../../../app/ui";
import { restoreFromPhrase } from "../../../wallet/onboarding";
import { finish, FormEnd, useNewPassphrase } from "./common";

export function RestoreFlow() {
  const [phrase, setPhrase] = useState("");
  const [name, setName] = useState("");
  const newPassphrase = useNewPassphrase("restore");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);

  async function submit(event: Event) {
    event.preventDefault();
    setError(null);
    const passphraseOk = newPassphrase.check();
    if (!phrase.trim()) {
      setError(new UserError("Type your 24-word recovery phrase."));
      return;
    }
    if (!passphraseOk) return;
    setBusy(true);
    try {
      const { keys, node } = await restoreFromPhrase(phrase, name);
      await finish(keys, newPassphrase.passphrase, node);
    } catch (caught) {
      setError(caught);
      setBusy(false);
    }
  }

  return (
    <form onSubmit={submit} noValidate>
      <h2>Restore from recovery phrase</h2>
      <Field id="restore-phrase" label="Recovery phrase" hint="The 24 words you wrote down, in order, separated by spaces.">
        <textarea
          id="restore-phrase"
          rows={4}
          autoComplete="off"
          autoCapitalize="none"
          spellcheck={false}
          aria-describedby="restore-phrase-hint"
          value={phrase}
          onInput={(e) => setPhrase(e.currentTarget.value)}
        />
      </Field>
      <Field id="restore-name" label="Your name" hint="Optional. Shown only on this device.">
        <input id="restore-name" autoComplete="name" aria-describedby="restore-name-hint" value={name} onInput={(e) => setName(e.currentTarget.value)} />
      </Field>
      {newPassphrase.fields}
      <FormEnd error={error} busy={busy ? "Restoring your identity" : null} submit="Restore" />
    </form>
  );
}
