// The patient's start page: unlock a wallet kept on this device, or get keys into the page
// (create an identity, restore it from its phrase, open a key file, claim a clinic's
// package). Every key, phrase and code stays in the page (wallet/onboarding.ts).
import type { ComponentChildren } from "preact";
import { useRef, useState } from "preact/hooks";
import { UserError } from "../../app/errors";
import { navigate } from "../../app/router";
import { useSession } from "../../app/session";
import { ErrorMessage, Field, Loading, Notice, Page, useAsync } from "../../app/ui";
import { forgetWallet, listWallets, passphraseProblem, type WalletSummary } from "../../wallet/keystore";
import {
  EnrolmentClosed,
  claimPackage,
  keepOnDevice,
  keyFileText,
  newPatientKeys,
  openKeyFile,
  parseVoucher,
  pickCheckPositions,
  registerPatient,
  requestVoucher,
  restoreFromPhrase,
  startSession,
  unlock,
  wrongWords,
  type PatientKeys,
  type Voucher,
} from "../../wallet/onboarding";
import type { NodeClient } from "../../wallet/node";
import "./start.css";

const TIMELINE = "/patient/timeline";
const MAX_FILE_BYTES = 64 * 1024;

export function Start() {
  const session = useSession();
  const stored = useAsync(listWallets, []);
  const [showOnboarding, setShowOnboarding] = useState(false);
  if (session.kind === "patient") {
    return (
      <Page title="You are signed in">
        <p>
          You are signed in as <strong>{session.wallet.name || "a patient"}</strong>. <a href={`#${TIMELINE}`}>Go to your timeline</a>.
        </p>
      </Page>
    );
  }
  if (stored.loading) {
    return (
      <Page title="Your health records">
        <Loading what="Looking for wallets on this device" />
      </Page>
    );
  }
  const wallets = stored.value ?? [];
  if (wallets.length > 0 && !showOnboarding) {
    return <UnlockView wallets={wallets} onOther={() => setShowOnboarding(true)} onForgotten={stored.reload} />;
  }
  return (
    <Page
      title="Your health records"
      intro="Your keys are made and kept in this browser, encrypted under your passphrase. CareLedger's servers never see them."
    >
      {stored.error ? <ErrorMessage error={stored.error} title="Wallets on this device" /> : null}
      {wallets.length > 0 ? (
        <p>
          <button type="button" class="link-button inline" onClick={() => setShowOnboarding(false)}>
            Back to the wallets on this device
          </button>
        </p>
      ) : null}
      <Onboarding />
    </Page>
  );
}

// --- unlocking a stored wallet -------------------------------------------------------------

function UnlockView(props: { wallets: WalletSummary[]; onOther: () => void; onForgotten: () => void }) {
  const [chosen, setChosen] = useState(props.wallets[0]!.did);
  const [passphrase, setPassphrase] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [forgetting, setForgetting] = useState(false);
  const wallet = props.wallets.find((w) => w.did === chosen) ?? props.wallets[0]!;

  async function submit(event: Event) {
    event.preventDefault();
    setError(null);
    if (!passphrase) {
      setError(new UserError("Type your passphrase."));
      return;
    }
    setBusy(true);
    try {
      await unlock(wallet.did, passphrase);
      navigate(TIMELINE);
    } catch (caught) {
      setError(caught);
      setBusy(false);
    }
  }

  async function forget() {
    await forgetWallet(wallet.did);
    setForgetting(false);
    props.onForgotten();
  }

  return (
    <Page title="Unlock your wallet" intro="Your keys are kept on this device, encrypted under your passphrase.">
      <form class="card" onSubmit={submit} noValidate>
        {props.wallets.length === 1 ? (
          <p class="wallet-line">
            <strong>{wallet.name || "Unnamed wallet"}</strong>
            <span class="mono did">{wallet.did}</span>
          </p>
        ) : (
          <fieldset class="wallet-choice">
            <legend>Wallet</legend>
            {props.wallets.map((w) => (
              <label key={w.did} class="radio-line">
                <input type="radio" name="wallet" value={w.did} checked={w.did === chosen} onChange={() => setChosen(w.did)} />
                <span>
                  <strong>{w.name || "Unnamed wallet"}</strong> <span class="mono did">{w.did}</span>
                </span>
              </label>
            ))}
          </fieldset>
        )}
        <Field id="unlock-passphrase" label="Passphrase">
          <input
            id="unlock-passphrase"
            type="password"
            autoComplete="current-password"
            value={passphrase}
            onInput={(e) => setPassphrase(e.currentTarget.value)}
          />
        </Field>
        {error ? <ErrorMessage error={error} /> : null}
        {busy ? <Loading what="Unlocking" /> : null}
        <div class="actions">
          <button type="submit" disabled={busy}>
            Unlock
          </button>
          <button type="button" class="secondary" onClick={props.onOther} disabled={busy}>
            Use another identity
          </button>
        </div>
      </form>
      {forgetting ? (
        <div class="card" role="group" aria-labelledby="forget-title">
          <h2 id="forget-title">Forget {wallet.name || "this wallet"} on this device?</h2>
          <p>
            Its keys are deleted from this browser. You can get the identity back only with its recovery phrase or its key file.
          </p>
          <div class="actions">
            <button type="button" class="danger" onClick={() => void forget()}>
              Forget it
            </button>
            <button type="button" class="secondary" onClick={() => setForgetting(false)}>
              Keep it
            </button>
          </div>
        </div>
      ) : (
        <p>
          <button type="button" class="link-button inline" onClick={() => setForgetting(true)}>
            Forget this wallet on this device…
          </button>
        </p>
      )}
    </Page>
  );
}

// --- the four ways in ------------------------------------------------------------------------

const TABS = [
  { id: "create", label: "Create a new identity" },
  { id: "restore", label: "Restore from recovery phrase" },
  { id: "claim", label: "Claim my records" },
  { id: "keyfile", label: "Open a key file" },
] as const;
type TabId = (typeof TABS)[number]["id"];

function Onboarding() {
  const [tab, setTab] = useState<TabId>("create");
  const refs = useRef<Record<string, HTMLButtonElement | null>>({});

  function onKey(event: KeyboardEvent, index: number) {
    const step = event.key === "ArrowRight" ? 1 : event.key === "ArrowLeft" ? -1 : 0;
    if (!step && event.key !== "Home" && event.key !== "End") return;
    event.preventDefault();
    const next =
      event.key === "Home" ? 0 : event.key === "End" ? TABS.length - 1 : (index + step + TABS.length) % TABS.length;
    const id = TABS[next]!.id;
    setTab(id);
    refs.current[id]?.focus();
  }

  return (
    <>
      <div class="tabs" role="tablist" aria-label="How to start">
        {TABS.map((t, index) => (
          <button
            key={t.id}
            ref={(el) => {
              refs.current[t.id] = el;
            }}
            type="button"
            role="tab"
            id={`tab-${t.id}`}
            aria-selected={tab === t.id}
            aria-controls={`panel-${t.id}`}
            tabIndex={tab === t.id ? 0 : -1}
            class={tab === t.id ? "tab tab-selected" : "tab"}
            onClick={() => setTab(t.id)}
            onKeyDown={(e) => onKey(e, index)}
          >
            {t.label}
          </button>
        ))}
      </div>
      <div class="card tab-panel" role="tabpanel" id={`panel-${tab}`} aria-labelledby={`tab-${tab}`}>
        {tab === "create" ? <CreateFlow /> : null}
        {tab === "restore" ? <RestoreFlow /> : null}
        {tab === "claim" ? <ClaimFlow /> : null}
        {tab === "keyfile" ? <KeyFileFlow /> : null}
      </div>
    </>
  );
}

/** Both passphrase fields; `error` shows under the second. */
function PassphraseFields(props: {
  prefix: string;
  value: [string, string];
  onChange: (value: [string, string]) => void;
  error?: string | undefined;
}) {
  const [first, second] = props.value;
  return (
    <>
      <Field
        id={`${props.prefix}-passphrase`}
        label="Passphrase"
        hint="At least 8 characters. It unlocks your keys on this device; nobody can reset it for you."
      >
        <input
          id={`${props.prefix}-passphrase`}
          type="password"
          autoComplete="new-password"
          aria-describedby={`${props.prefix}-passphrase-hint`}
          value={first}
          onInput={(e) => props.onChange([e.currentTarget.value, second])}
        />
      </Field>
      <Field id={`${props.prefix}-repeat`} label="Repeat passphrase" error={props.error}>
        <input
          id={`${props.prefix}-repeat`}
          type="password"
          autoComplete="new-password"
          aria-invalid={props.error ? true : undefined}
          aria-describedby={props.error ? `${props.prefix}-repeat-error` : undefined}
          value={second}
          onInput={(e) => props.onChange([first, e.currentTarget.value])}
        />
      </Field>
    </>
  );
}

async function readSmallFile(input: HTMLInputElement | null, what: string): Promise<string> {
  const file = input?.files?.[0];
  if (!file) throw new UserError(`Choose the ${what} file.`);
  if (file.size > MAX_FILE_BYTES) throw new UserError(`This file is too large to be a ${what} (${Math.ceil(file.size / 1024)} KiB).`);
  return file.text();
}

/** Keep the keys on this device, sign in, and go to the timeline. */
async function finish(keys: PatientKeys, passphrase: string, node?: NodeClient): Promise<void> {
  await keepOnDevice(keys, passphrase);
  startSession(keys, node);
  navigate(TIMELINE);
}

// --- create ------------------------------------------------------------------------------------

type CreateStep =
  | { step: "form" }
  | { step: "phrase"; phrase: string; keys: PatientKeys }
  | { step: "voucher"; keys: PatientKeys; closed: boolean };

function CreateFlow() {
  const [name, setName] = useState("");
  const [passphrases, setPassphrases] = useState<[string, string]>(["", ""]);
  const [mismatch, setMismatch] = useState<string | undefined>();
  const [state, setState] = useState<CreateStep>({ step: "form" });
  const [busy, setBusy] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);

  async function create(event: Event) {
    event.preventDefault();
    setError(null);
    const problem = passphraseProblem(...passphrases);
    setMismatch(problem ?? undefined);
    if (!name.trim()) {
      setError(new UserError("Type your name: it is shown only on this device, never on the ledger."));
      return;
    }
    if (problem) return;
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
      await finish(keys, passphrases[0], node);
    } catch (caught) {
      if (caught instanceof EnrolmentClosed) setState({ step: "voucher", keys, closed: true });
      else setError(caught);
      setBusy(null);
    }
  }

  if (state.step === "phrase") {
    return <PhraseStep phrase={state.phrase} onChecked={() => void register(state.keys)} busy={busy} error={error} />;
  }
  if (state.step === "voucher") {
    return <VoucherStep closed={state.closed} busy={busy} error={error} onVoucher={(v) => void register(state.keys, v)} />;
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
      <PassphraseFields prefix="create" value={passphrases} onChange={setPassphrases} error={mismatch} />
      {error ? <ErrorMessage error={error} /> : null}
      {busy ? <Loading what={busy} /> : null}
      <div class="actions">
        <button type="submit" disabled={!!busy}>
          Create identity
        </button>
      </div>
    </form>
  );
}

function VoucherStep(props: { closed: boolean; busy: string | null; error: unknown; onVoucher: (v: Voucher) => void }) {
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
        it here.
      </Notice>
      <Field id="voucher" label="Enrolment voucher" hint="The text your clinic gave you, starting with { and ending with }.">
        <textarea id="voucher" rows={5} aria-describedby="voucher-hint" value={text} onInput={(e) => setText(e.currentTarget.value)} />
      </Field>
      {error || props.error ? <ErrorMessage error={error ?? props.error} /> : null}
      {props.busy ? <Loading what={props.busy} /> : null}
      <div class="actions">
        <button type="submit" disabled={!!props.busy}>
          Register
        </button>
      </div>
    </form>
  );
}

// --- the phrase, shown once and checked --------------------------------------------------------

function PhraseStep(props: {
  phrase: string;
  onChecked: () => void;
  busy: string | null;
  error: unknown;
  before?: ComponentChildren;
}) {
  const [checking, setChecking] = useState(false);
  const [positions] = useState(() => pickCheckPositions());
  const [answers, setAnswers] = useState<Record<number, string>>({});
  const [wrong, setWrong] = useState<number[]>([]);
  const words = props.phrase.split(" ");

  function confirm(event: Event) {
    event.preventDefault();
    const filled = Object.fromEntries(positions.map((p) => [p, answers[p] ?? ""]));
    const bad = wrongWords(props.phrase, filled);
    setWrong(bad);
    if (bad.length === 0) props.onChecked();
  }

  if (!checking) {
    return (
      <div>
        <h2>Your recovery phrase</h2>
        {props.before}
        <Notice kind="warning">
          Write these 24 words on paper, in order, and keep them somewhere safe. They are shown only once. Anyone who has them can
          act as you; nobody, not even your clinic, can give them back to you.
        </Notice>
        <ol class="phrase" data-testid="recovery-phrase" aria-label="Recovery phrase, 24 words">
          {words.flatMap((word, i) => [i > 0 ? " " : null, <li key={i}>{word}</li>])}
        </ol>
        <div class="actions">
          <button type="button" onClick={() => setChecking(true)}>
            I have written it down
          </button>
        </div>
      </div>
    );
  }
  return (
    <form onSubmit={confirm} noValidate>
      <h2>Check your recovery phrase</h2>
      <p>Type these words from what you wrote down, to make sure it is right.</p>
      {positions.map((p) => (
        <Field key={p} id={`word-${p}`} label={`Word ${p}`} error={wrong.includes(p) ? `Word ${p} is not right.` : undefined}>
          <input
            id={`word-${p}`}
            autoComplete="off"
            autoCapitalize="none"
            spellcheck={false}
            aria-invalid={wrong.includes(p) ? true : undefined}
            value={answers[p] ?? ""}
            onInput={(e) => setAnswers({ ...answers, [p]: e.currentTarget.value })}
          />
        </Field>
      ))}
      {wrong.length > 0 ? (
        <div class="alert alert-error" role="alert">
          {wrong.length === 1 ? `Word ${wrong[0]} does not match` : `Words ${wrong.join(", ")} do not match`} your recovery phrase.
          Check what you wrote down.
        </div>
      ) : null}
      {props.error ? <ErrorMessage error={props.error} /> : null}
      {props.busy ? <Loading what={props.busy} /> : null}
      <div class="actions">
        <button type="submit" disabled={!!props.busy}>
          Confirm
        </button>
        <button type="button" class="secondary" onClick={() => setChecking(false)} disabled={!!props.busy}>
          Show the phrase again
        </button>
      </div>
    </form>
  );
}

// --- restore -------------------------------------------------------------------------------------

function RestoreFlow() {
  const [phrase, setPhrase] = useState("");
  const [name, setName] = useState("");
  const [passphrases, setPassphrases] = useState<[string, string]>(["", ""]);
  const [mismatch, setMismatch] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);

  async function submit(event: Event) {
    event.preventDefault();
    setError(null);
    const problem = passphraseProblem(...passphrases);
    setMismatch(problem ?? undefined);
    if (!phrase.trim()) {
      setError(new UserError("Type your 24-word recovery phrase."));
      return;
    }
    if (problem) return;
    setBusy(true);
    try {
      const { keys, node } = await restoreFromPhrase(phrase, name);
      await finish(keys, passphrases[0], node);
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
      <PassphraseFields prefix="restore" value={passphrases} onChange={setPassphrases} error={mismatch} />
      {error ? <ErrorMessage error={error} /> : null}
      {busy ? <Loading what="Restoring your identity" /> : null}
      <div class="actions">
        <button type="submit" disabled={busy}>
          Restore
        </button>
      </div>
    </form>
  );
}

// --- key file ------------------------------------------------------------------------------------

function KeyFileFlow() {
  const fileRef = useRef<HTMLInputElement>(null);
  const [passphrases, setPassphrases] = useState<[string, string]>(["", ""]);
  const [mismatch, setMismatch] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);

  async function submit(event: Event) {
    event.preventDefault();
    setError(null);
    const problem = passphraseProblem(...passphrases);
    setMismatch(problem ?? undefined);
    setBusy(true);
    try {
      const text = await readSmallFile(fileRef.current, "key file");
      if (problem) return;
      const { keys, node } = await openKeyFile(text);
      await finish(keys, passphrases[0], node);
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
      <PassphraseFields prefix="keyfile" value={passphrases} onChange={setPassphrases} error={mismatch} />
      {error ? <ErrorMessage error={error} /> : null}
      {busy ? <Loading what="Opening your key file" /> : null}
      <div class="actions">
        <button type="submit" disabled={busy}>
          Open key file
        </button>
      </div>
    </form>
  );
}

// --- claim ---------------------------------------------------------------------------------------

function ClaimFlow() {
  const fileRef = useRef<HTMLInputElement>(null);
  const [code, setCode] = useState("");
  const [passphrases, setPassphrases] = useState<[string, string]>(["", ""]);
  const [mismatch, setMismatch] = useState<string | undefined>();
  const [busy, setBusy] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [claimed, setClaimed] = useState<{ keys: PatientKeys; phrase: string; node: NodeClient } | null>(null);

  async function submit(event: Event) {
    event.preventDefault();
    setError(null);
    const problem = passphraseProblem(...passphrases);
    setMismatch(problem ?? undefined);
    try {
      const text = await readSmallFile(fileRef.current, "claim package");
      if (!code.trim()) throw new UserError("Type the claim code: the six words in the letter from your clinic.");
      if (problem) return;
      setBusy("Opening the claim package");
      const done = await claimPackage(text, code, (keys) => keepOnDevice(keys, passphrases[0]), setBusy);
      setClaimed(done);
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
      <PassphraseFields prefix="claim" value={passphrases} onChange={setPassphrases} error={mismatch} />
      {error ? <ErrorMessage error={error} /> : null}
      {busy ? <Loading what={busy} /> : null}
      <div class="actions">
        <button type="submit" disabled={!!busy}>
          Claim my records
        </button>
      </div>
    </form>
  );
}

/** After a claim: the phrase restores the new keys only; the records from before the claim
 * also need the key file (docs/crypto.md 10), which the patient can save here. */
function ClaimedNotice(props: { keys: PatientKeys }) {
  const [href] = useState(() => URL.createObjectURL(new Blob([keyFileText(props.keys)], { type: "application/json" })));
  return (
    <>
      <Notice kind="success">Your records are now yours: your identity uses keys that only you hold.</Notice>
      <p>
        Your keys are kept on this device under your passphrase. The recovery phrase below restores your new keys; the records
        written before today also need your key file. Save it somewhere safe, like the phrase:
      </p>
      <p>
        <a class="button secondary" href={href} download="careledger-key.json">
          Download my key file
        </a>
      </p>
    </>
  );
}
