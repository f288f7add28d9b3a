// Unlocking a wallet kept on this device, or forgetting it.
import { useState } from "preact/hooks";
import { UserError } from "../../../app/errors";
import { navigate } from "../../../app/router";
import { Field, Page } from "../../../app/ui";
import { forgetWallet, type WalletSummary } from "../../../wallet/keystore";
import { unlock } from "../../../wallet/onboarding";
import { FormEnd, TIMELINE } from "./common";

export function UnlockView(props: { wallets: WalletSummary[]; onOther: () => void; onForgotten: () => void }) {
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
        <FormEnd error={error} busy={busy ? "Unlocking" : null} submit="Unlock">
          <button type="button" class="secondary" onClick={props.onOther} disabled={busy}>
            Use another identity
          </button>
        </FormEnd>
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
