// Creating a new identity: keys made here, the phrase shown and checked, then registered
// (with a clinic's voucher where the node does not enrol patients by itself).
import { useState } from "preact/hooks";
import { UserError } from "../../../app/errors";
import { Field, Notice } from "../../../app/ui";
import { EnrolmentClosed, newPatientKeys, parseVoucher, registerPatient, requestVoucher, type PatientKeys, type Voucher } from "../../../wallet/onboarding";
import { finish, FormEnd, useNewPassphrase } from "./common";
import { PhraseStep } from "./Phrase";

type CreateStep =
  | { step: "form" }
  | { step: "phrase"; phrase: string; keys: PatientKeys }
  | { step: "voucher"; keys: PatientKeys };

export function CreateFlow() {
  const [name, setName] = useState("");
  const newPassphrase = useNewPassphrase("create");
  const [state, setState] = useState<CreateStep>({ step: "form" });
  const [busy, setBusy] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);

  async function create(event: Event) {
    event.preventDefault();
    setError(null);
    const passphraseOk = newPassphrase.check();
    if (!name.trim()) {
      setError(new UserError("Type your name: it is shown only on this device, never on the ledger."));
      return;
    }
    if (!passphraseOk) return;
    setBusy("Making your keys");
    try {
      const made = await newPatientKeys(name);
      setState({ step: "phrase", ...made });
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(null);
    }
  }

  async function register(keys: PatientKeys, voucher?: Voucher) {
    setError(null);
    setBusy("Registering your identity on the ledger");
    try {
      const node = await registerPatient(keys, voucher ?? (await requestVoucher(keys.did)));
      await finish(keys, newPassphrase.passphrase, node);
    } catch (caught) {
      if (caught instanceof EnrolmentClosed) setState({ step: "voucher", keys });
      else setError(caught);
      setBusy(null);
    }
  }

  if (state.step === "phrase") {
    return <PhraseStep phrase={state.phrase} onChecked={() => void register(state.keys)} busy={busy} error={error} />;
  }
  if (state.step === "voucher") {
    return (
      <VoucherStep did={state.keys.did} busy={busy} error={error} onVoucher={(v) => void register(state.keys, v)} />
    );
  }
  return (
    <form onSubmit={create} noValidate>
      <h2>Create a new identity</h2>
      <p>
        Your keys are made here, in this browser. You get a recovery phrase of 24 words: the only way to get your identity
        back if this device is lost.
      </p>
      <Field id="create-name" label="Your name" hint="Shown only on this device. The ledger never holds your name.">
        <input
          id="create-name"
          autoComplete="name"
          aria-describedby="create-name-hint"
          value={name}
          onInput={(e) => setName(e.currentTarget.value)}
        />
      </Field>
      {newPassphrase.fields}
      <FormEnd error={error} busy={busy} submit="Create identity" />
    </form>
  );
}

function VoucherStep(props: { did: string; busy: string | null; error: unknown; onVoucher: (v: Voucher) => void }) {
  const [text, setText] = useState("");
  const [error, setError] = useState<unknown>(null);
  function submit(event: Event) {
    event.preventDefault();
    setError(null);
    try {
      props.onVoucher(parseVoucher(text));
    } catch (caught) {
      setError(caught);
    }
  }
  return (
    <form onSubmit={submit} noValidate>
      <h2>Register with your clinic's voucher</h2>
      <Notice kind="info">
        This node does not register new patients by itself. Ask your clinic for an enrolment voucher for your identity, then paste
        it here. Keep this page open meanwhile: your new keys are not saved until you are registered.
      </Notice>
      <p>Your identity (give it to your clinic):</p>
      <p class="mono did-box" data-testid="new-did">{props.did}</p>
      <Field id="voucher" label="Enrolment voucher" hint="The text your clinic gave you, starting with { and ending with }.">
        <textarea id="voucher" rows={5} aria-describedby="voucher-hint" value={text} onInput={(e) => setText(e.currentTarget.value)} />
      </Field>
      <FormEnd error={error ?? props.error} busy={props.busy} submit="Register" />
    </form>
  );
}
