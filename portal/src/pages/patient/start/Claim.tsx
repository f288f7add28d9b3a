// Claiming a clinic's package: the records move to new keys only the patient holds.
import { useRef, useState } from "preact/hooks";
import { UserError } from "../../../app/errors";
import { navigate } from "../../../app/router";
import { Field, Notice } from "../../../app/ui";
import { downloadText } from "../../../wallet/export";
import { claimPackage, keepOnDevice, keyFileText, startSession, type PatientKeys } from "../../../wallet/onboarding";
import type { NodeClient } from "../../../wallet/node";
import { FormEnd, readSmallFile, TIMELINE, useNewPassphrase } from "./common";
import { PhraseStep } from "./Phrase";

export function ClaimFlow(props: { onClaimed: () => void }) {
  const fileRef = useRef<HTMLInputElement>(null);
  const [code, setCode] = useState("");
  const newPassphrase = useNewPassphrase("claim");
  const [busy, setBusy] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [claimed, setClaimed] = useState<{ keys: PatientKeys; phrase: string; node: NodeClient } | null>(null);

  async function submit(event: Event) {
    event.preventDefault();
    setError(null);
    const passphraseOk = newPassphrase.check();
    try {
      const text = await readSmallFile(fileRef.current, "claim package");
      if (!code.trim()) throw new UserError("Type the claim code: the six words in the letter from your clinic.");
      if (!passphraseOk) return;
      setBusy("Opening the claim package");
      const done = await claimPackage(text, code, (keys) => keepOnDevice(keys, newPassphrase.passphrase), setBusy);
      setClaimed(done);
      props.onClaimed();
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(null);
    }
  }

  if (claimed) {
    return (
      <PhraseStep
        phrase={claimed.phrase}
        busy={null}
        error={null}
        before={<ClaimedNotice keys={claimed.keys} />}
        onChecked={() => {
          startSession(claimed.keys, claimed.node);
          navigate(TIMELINE);
        }}
      />
    );
  }
  return (
    <form onSubmit={submit} noValidate>
      <h2>Claim my records</h2>
      <p>
        Your clinic registered you and gave you a claim package (a file) and a claim code (six words). Claiming moves your records
        to new keys that only you hold: the clinic's copy of the package stops working.
      </p>
      <Field id="claim-package" label="Claim package">
        <input id="claim-package" type="file" accept=".json,application/json" ref={fileRef} />
      </Field>
      <Field id="claim-code" label="Claim code" hint="Six words, as in the letter from your clinic.">
        <input
          id="claim-code"
          autoComplete="off"
          autoCapitalize="none"
          spellcheck={false}
          aria-describedby="claim-code-hint"
          value={code}
          onInput={(e) => setCode(e.currentTarget.value)}
        />
      </Field>
      {newPassphrase.fields}
      <FormEnd error={error} busy={busy} submit="Claim my records" />
    </form>
  );
}

/** After a claim: the phrase restores the new keys only; the records from before the claim
 * also need the key file (docs/crypto.md 10), which the patient can save here. */
function ClaimedNotice(props: { keys: PatientKeys }) {
  return (
    <>
      <Notice kind="success">Your records are now yours: your identity uses keys that only you hold.</Notice>
      <p>
        Your keys are kept on this device under your passphrase. The recovery phrase below restores your new keys; the records
        written before today also need your key file. Save it somewhere safe, like the phrase:
      </p>
      <p>
        <button
          type="button"
          class="secondary"
          onClick={() => downloadText("careledger-key.json", keyFileText(props.keys), "application/json")}
        >
          Download my key file
        </button>
      </p>
    </>
  );
}
