// Sharing: who may see and who may add to the patient's records, in plain words; a grant form
// that says what will happen before anything is signed; revoke with a confirmation.
import { useEffect, useRef, useState } from "preact/hooks";
import { UserError } from "../../app/errors";
import { useSession } from "../../app/session";
import { Empty, ErrorMessage, Field, Loading, Notice, Page, useAsync } from "../../app/ui";
import { grant, grantableParties, listGrants, partyLabel, revoke, shortDid, type Party } from "../../wallet/consent";
import type { PatientWallet } from "../../wallet/patient";
import {
  dayInWords,
  dayOf,
  describeGrant,
  grantState,
  grantSummary,
  hasErrors,
  PURPOSES,
  SCOPE_LABELS,
  SCOPE_ORDER,
  scopesInWords,
  validateGrantForm,
  type GrantForm,
  type GrantFormErrors,
  type GrantRow,
} from "../../wallet/sharing-text";
import "./sharing.css";

const now = () => Math.floor(Date.now() / 1000);

export function Sharing() {
  const session = useSession();
  if (session.kind !== "patient") {
    return (
      <Page title="Sharing">
        <p>
          Sign in as a patient to see and change who may read your records. <a href="#/patient/start">Sign in</a>
        </p>
      </Page>
    );
  }
  return <SharingFor wallet={session.wallet} />;
}

function SharingFor(props: { wallet: PatientWallet }) {
  const { wallet } = props;
  const loaded = useAsync(
    async () => {
      const [grants, parties] = await Promise.all([listGrants(wallet.node, wallet.did), grantableParties(wallet.node)]);
      return { grants, parties };
    },
    [wallet.did],
  );
  const [done, setDone] = useState<string>("");
  return (
    <Page title="Sharing" intro="Choose who may read your records, and who may add to them. You can stop sharing at any time.">
      {done ? <Notice kind="success">{done}</Notice> : null}
      {loaded.loading && !loaded.value ? <Loading what="Loading who you share with" /> : null}
      {loaded.error ? <ErrorMessage error={loaded.error} title="Could not load your sharing" /> : null}
      {loaded.value ? (
        <>
          <GrantLists
            wallet={wallet}
            grants={loaded.value.grants}
            parties={loaded.value.parties}
            onRevoked={(message) => {
              setDone(message);
              loaded.reload();
            }}
          />
          <GrantFormSection
            wallet={wallet}
            parties={loaded.value.parties}
            onGranted={(message) => {
              setDone(message);
              loaded.reload();
            }}
          />
        </>
      ) : null}
    </Page>
  );
}

function nameOf(did: string, parties: Party[], patient: string): string {
  if (did === patient) return "You";
  const party = parties.find((p) => p.did === did);
  return party ? partyLabel(party) : `Someone not on the ledger's member list (${shortDid(did)})`;
}

function GrantLists(props: { wallet: PatientWallet; grants: GrantRow[]; parties: Party[]; onRevoked: (message: string) => void }) {
  const at = now();
  const current = props.grants.filter((g) => ["active", "not started"].includes(grantState(g, at)));
  const past = props.grants.filter((g) => !current.includes(g));
  const readers = current.filter((g) => g.action !== "write");
  const writers = current.filter((g) => g.action === "write");
  const item = (g: GrantRow) => (
    <GrantItem key={g.id} wallet={props.wallet} grant={g} name={nameOf(g.grantee, props.parties, props.wallet.did)} onRevoked={props.onRevoked} />
  );
  return (
    <>
      <h2 class="section-title">Who can see your records</h2>
      {readers.length ? <ul class="grant-list">{readers.map(item)}</ul> : <Empty>Nobody else can read your records.</Empty>}
      <h2 class="section-title">Who can add to your records</h2>
      {writers.length ? <ul class="grant-list">{writers.map(item)}</ul> : <Empty>Nobody else can add to your records.</Empty>}
      {past.length ? (
        <details>
          <summary>Ended and revoked sharing ({past.length})</summary>
          <ul class="grant-list">{past.map(item)}</ul>
        </details>
      ) : null}
    </>
  );
}

function stateText(grant: GrantRow, at: number): string {
  const state = grantState(grant, at);
  if (state === "revoked") return "Revoked";
  if (state === "ended") return "Ended";
  if (state === "not started") return `Starts ${dayInWords(dayOf(grant.start))}`;
  return "Active";
}

function GrantItem(props: { wallet: PatientWallet; grant: GrantRow; name: string; onRevoked: (message: string) => void }) {
  const { grant: g, wallet } = props;
  const [confirming, setConfirming] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const at = now();
  const state = grantState(g, at);
  const live = state === "active" || state === "not started";
  const by = g.grantor && g.grantor !== wallet.did ? ` Made for you by ${shortDid(g.grantor)}.` : "";
  const confirm = async () => {
    setBusy(true);
    setError(null);
    try {
      const rotated = await revoke({ did: wallet.did, keys: wallet.keys, node: wallet.node }, g.id);
      const keysNote = rotated.length
        ? ` Your ${scopesInWords(rotated)} now use new keys: what is written from now on cannot be opened with the keys ${props.name} held.`
        : "";
      props.onRevoked(`You stopped sharing with ${props.name}. The ledger refuses their reads from now on.${keysNote}`);
    } catch (e) {
      setError(e);
      setBusy(false);
    }
  };
  return (
    <li class="card grant" data-testid="grant" data-grant-id={g.id} data-state={state}>
      <p class="grant-sentence">{describeGrant(g, props.name, at)}</p>
      <p class="grant-meta">
        <span class={`badge state-${state.replace(" ", "-")}`}>{stateText(g, at)}</span>
        {by}
      </p>
      {error ? <ErrorMessage error={error} title="Not revoked" /> : null}
      {live && !confirming ? (
        <div>
          <button type="button" class="secondary" onClick={() => setConfirming(true)}>
            Revoke
          </button>
        </div>
      ) : null}
      {live && confirming ? (
        <div class="grant-confirm" role="group" aria-label={`Confirm: stop sharing with ${props.name}`}>
          <p>
            Stop sharing with <strong>{props.name}</strong>? They will be refused from the next block on. Copies they already
            made (for example in a clinic's own system) are outside the ledger's reach.
          </p>
          <div class="actions">
            <button type="button" class="danger" disabled={busy} onClick={() => void confirm()}>
              {busy ? "Revoking…" : "Yes, revoke"}
            </button>
            <button type="button" class="secondary" disabled={busy} onClick={() => setConfirming(false)}>
              Keep sharing
            </button>
          </div>
        </div>
      ) : null}
    </li>
  );
}

function oneYearFromToday(): string {
  const date = new Date();
  date.setUTCFullYear(date.getUTCFullYear() + 1);
  return date.toISOString().slice(0, 10);
}

const EMPTY_FORM = (): GrantForm => ({ grantee: "", access: "read", scopes: [], purpose: "TREAT", until: oneYearFromToday() });

function GrantFormSection(props: { wallet: PatientWallet; parties: Party[]; onGranted: (message: string) => void }) {
  const { wallet, parties } = props;
  const [form, setForm] = useState<GrantForm>(EMPTY_FORM);
  const [errors, setErrors] = useState<GrantFormErrors>({});
  const [reviewing, setReviewing] = useState(false);
  const [busy, setBusy] = useState(false);
  const [failure, setFailure] = useState<unknown>(null);
  const update = (change: Partial<GrantForm>) => {
    setForm({ ...form, ...change });
    setReviewing(false);
  };
  const party = parties.find((p) => p.did === form.grantee);
  const partyDids = parties.map((p) => p.did);
  const review = (event: Event) => {
    event.preventDefault();
    const found = validateGrantForm(form, partyDids, now());
    setErrors(found);
    setFailure(null);
    setReviewing(!hasErrors(found));
  };
  const sign = async () => {
    const found = validateGrantForm(form, partyDids, now()); // the day may have turned
    setErrors(found);
    if (hasErrors(found) || !party) {
      setReviewing(false);
      return;
    }
    setBusy(true);
    setFailure(null);
    try {
      await grant(
        { did: wallet.did, keys: wallet.keys, node: wallet.node },
        {
          grantee: form.grantee,
          action: form.access === "write" ? "write" : "read",
          scopes: SCOPE_ORDER.filter((s) => form.scopes.includes(s)),
          purposes: form.purpose ? [form.purpose] : [],
          until: form.until,
        },
      );
      props.onGranted(`Shared. ${grantSummary(partyLabel(party), form)}`);
      setForm(EMPTY_FORM());
      setReviewing(false);
    } catch (e) {
      setFailure(e instanceof Error ? new UserError(`The ledger did not record this sharing: ${e.message}`) : e);
    } finally {
      setBusy(false);
    }
  };
  const organisations = parties.filter((p) => p.kind === "organisation");
  const summaryTitle = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    if (reviewing) summaryTitle.current?.focus(); // keyboard and screen-reader users land on it
  }, [reviewing]);
  return (
    <section aria-labelledby="grant-form-title">
      <h2 class="section-title" id="grant-form-title">
        Share your records
      </h2>
      <form class="card" onSubmit={review} noValidate>
        <Field id="grant-grantee" label="Share with" hint="A clinic (everyone who works there), or one practitioner of it." error={errors.grantee}>
          <select
            id="grant-grantee"
            value={form.grantee}
            aria-invalid={errors.grantee ? "true" : undefined}
            aria-describedby={errors.grantee ? "grant-grantee-error" : "grant-grantee-hint"}
            onChange={(e) => update({ grantee: (e.target as HTMLSelectElement).value })}
          >
            <option value="">Choose…</option>
            {organisations.map((org) => (
              <optgroup key={org.did} label={org.name}>
                <option value={org.did}>{org.name}</option>
                {parties
                  .filter((p) => p.kind === "practitioner" && p.org === org.did)
                  .map((p) => (
                    <option key={p.did} value={p.did}>
                      {partyLabel(p)}
                    </option>
                  ))}
              </optgroup>
            ))}
          </select>
        </Field>
        <Field id="grant-access" label="Access" hint="Read: see your records. Write: add new records to your file." error={errors.access}>
          <select
            id="grant-access"
            value={form.access}
            aria-invalid={errors.access ? "true" : undefined}
            aria-describedby={errors.access ? "grant-access-error" : "grant-access-hint"}
            onChange={(e) => update({ access: (e.target as HTMLSelectElement).value as GrantForm["access"] })}
          >
            <option value="read">Read</option>
            <option value="write">Write</option>
          </select>
        </Field>
        <ScopeChoices form={form} error={errors.scopes} onChange={(scopes) => update({ scopes })} />
        <Field id="grant-purpose" label="Purpose" hint="They may read only for this reason." error={errors.purpose}>
          <select
            id="grant-purpose"
            value={form.purpose}
            aria-invalid={errors.purpose ? "true" : undefined}
            aria-describedby={errors.purpose ? "grant-purpose-error" : "grant-purpose-hint"}
            onChange={(e) => update({ purpose: (e.target as HTMLSelectElement).value })}
          >
            {PURPOSES.map((p) => (
              <option key={p.code} value={p.code}>
                {p.label}
              </option>
            ))}
          </select>
        </Field>
        <Field id="grant-until" label="Until" hint="The last day of sharing. It ends at midnight (UTC) after that day." error={errors.until}>
          <input
            id="grant-until"
            type="date"
            value={form.until}
            aria-invalid={errors.until ? "true" : undefined}
            aria-describedby={errors.until ? "grant-until-error" : "grant-until-hint"}
            onInput={(e) => update({ until: (e.target as HTMLInputElement).value })}
          />
        </Field>
        {hasErrors(errors) ? (
          <p class="field-error" role="alert">
            Please correct the {Object.keys(errors).length === 1 ? "field" : "fields"} marked above. Nothing was signed.
          </p>
        ) : null}
        <div class="actions">
          <button type="submit">Review</button>
        </div>
      </form>
      {reviewing && party ? (
        <div class="card summary-card" aria-labelledby="grant-summary-title">
          <h3 id="grant-summary-title" tabIndex={-1} ref={summaryTitle}>
            Check before you sign
          </h3>
          <p class="grant-summary" data-testid="grant-summary">
            {grantSummary(partyLabel(party), form)}
          </p>
          {form.scopes.includes("sensitive") ? (
            <Notice kind="warning">This includes your sensitive records (mental health, sexual health and the like).</Notice>
          ) : null}
          <p class="hint">
            Signing puts this choice on the ledger, signed with your key. The ledger keeps who you shared with; your records stay encrypted.
          </p>
          {failure ? <ErrorMessage error={failure} /> : null}
          <div class="actions">
            <button type="button" disabled={busy} onClick={() => void sign()}>
              {busy ? "Signing…" : "Sign and share"}
            </button>
            <button type="button" class="secondary" disabled={busy} onClick={() => setReviewing(false)}>
              Change
            </button>
          </div>
        </div>
      ) : null}
    </section>
  );
}

function ScopeChoices(props: { form: GrantForm; error: string | undefined; onChange: (scopes: string[]) => void }) {
  const { form } = props;
  const toggle = (scope: string, on: boolean) =>
    props.onChange(on ? [...form.scopes, scope] : form.scopes.filter((s) => s !== scope));
  return (
    <fieldset
      class={props.error ? "scope-choices fieldset-invalid" : "scope-choices"}
      aria-describedby={props.error ? "grant-scopes-error" : undefined}
    >
      <legend>Which records</legend>
      {SCOPE_ORDER.map((scope) => (
        <div key={scope}>
          <div class="scope-choice">
            <input
              type="checkbox"
              id={`grant-scope-${scope}`}
              checked={form.scopes.includes(scope)}
              aria-describedby={scope === "sensitive" ? "grant-sensitive-warning" : undefined}
              onChange={(e) => toggle(scope, (e.target as HTMLInputElement).checked)}
            />
            <label for={`grant-scope-${scope}`}>{SCOPE_LABELS[scope]}</label>
          </div>
          {scope === "sensitive" ? (
            <p class="scope-warning" id="grant-sensitive-warning">
              Think twice: these records can harm you if they are seen by the wrong person. Share them only with someone you trust
              with them.
            </p>
          ) : null}
        </div>
      ))}
      {props.error ? (
        <p class="field-error" id="grant-scopes-error" role="alert">
          {props.error}
        </p>
      ) : null}
    </fieldset>
  );
}
