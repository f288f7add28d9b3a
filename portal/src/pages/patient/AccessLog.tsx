// Access log: every read of the patient's records (by whom, for which organisation, which
// record, when, why, allowed or denied), break-glass alerts first, and each entry's proof
// checked in this page against the block that committed it (wallet/audit.ts).
import { useEffect, useMemo, useState } from "preact/hooks";
import { useSession } from "../../app/session";
import { Empty, ErrorMessage, Loading, Page, useAsync } from "../../app/ui";
import {
  isAllowed,
  loadAccessLog,
  ProofChecker,
  type BreakGlassAlert,
  type LoggedAccess,
  type ProofResult,
} from "../../wallet/audit";
import { Directory, shortDid } from "../../wallet/consent";
import { describe, typeLabel } from "../../wallet/fhir-display";
import type { NodeClient } from "../../wallet/node";
import type { PatientWallet } from "../../wallet/patient";
import { purposePhrase, scopesInWords } from "../../wallet/sharing-text";
import { useMyRecords } from "./my-records";
import "./sharing.css";

const PENDING_RETRIES = 15;
const PENDING_RETRY_MS = 2000;
const SHOWN = 100; // entries rendered at first; "Show more" adds as many

const OUTCOME_WORDS: Record<string, string> = {
  patient: "Allowed: you read your own record",
  author: "Allowed: they wrote this record",
  grant: "Allowed by your sharing",
  delegate: "Allowed: someone you trust with your sharing",
  emergency: "Allowed: emergency access (break the glass)",
  denied: "Denied",
  not_found: "Denied: no such record",
  erased: "Denied: the record was erased",
  malformed: "Denied: a malformed request",
  unavailable: "Denied: the ledger could not be asked",
};

export function AccessLog() {
  const session = useSession();
  if (session.kind !== "patient") {
    return (
      <Page title="Access log">
        <p>
          Sign in as a patient to see who read your records. <a href="#/patient/start">Sign in</a>
        </p>
      </Page>
    );
  }
  return <AccessLogFor wallet={session.wallet} />;
}

interface RecordInfo {
  type: string; // the FHIR type, from the chain's anchor (in clear there)
}

/** Record name prefixes (32 hex) to their FHIR type: `records/records` names every record of
 * the patient with its type in clear, so this reads no blob (and adds nothing to the log). */
async function recordTypes(node: NodeClient, patient: string): Promise<Map<string, RecordInfo>> {
  const rows = await node.query<{ record: string; resource_type: string }[]>("records", "records", { patient });
  return new Map(rows.map((r) => [r.record.slice(0, 32), { type: r.resource_type }]));
}

function AccessLogFor(props: { wallet: PatientWallet }) {
  const { wallet } = props;
  const loaded = useAsync(
    async () => {
      const [log, types] = await Promise.all([
        loadAccessLog(wallet.node, wallet.did),
        recordTypes(wallet.node, wallet.did).catch(() => new Map<string, RecordInfo>()),
      ]);
      return { log, types };
    },
    [wallet.did],
  );
  const checker = useMemo(() => new ProofChecker(wallet.node), [wallet.did, loaded.value]);
  const directory = useMemo(() => new Directory(wallet.node), [wallet.did]);
  const [shown, setShown] = useState(SHOWN);
  const [labels, setLabels] = useState<Map<string, string>>(new Map());
  return (
    <Page
      title="Access log"
      intro="Every time someone asked for your records, the ledger noted who, for which organisation, why, and whether it was allowed. Each line is checked here against the ledger itself."
    >
      {loaded.loading && !loaded.value ? <Loading what="Loading your access log" /> : null}
      {loaded.error ? <ErrorMessage error={loaded.error} title="Could not load your access log" /> : null}
      {loaded.value ? (
        <>
          <Alerts alerts={loaded.value.log.alerts} directory={directory} />
          <div class="actions">
            <button type="button" class="secondary" onClick={() => loaded.reload()}>
              Refresh
            </button>
          </div>
          <RecordLabels wallet={wallet} onLabels={setLabels} />
          {loaded.value.log.entries.length === 0 ? (
            <Empty>Nobody has read your records yet.</Empty>
          ) : (
            <ul class="access-list" aria-label="Reads of your records, newest first">
              {loaded.value.log.entries.slice(0, shown).map((access) => (
                <AccessEntryItem
                  key={`${access.tx}/${access.index}`}
                  access={access}
                  patient={wallet.did}
                  types={loaded.value?.types ?? new Map()}
                  label={labels.get(access.entry.record.slice(0, 32))}
                  directory={directory}
                  checker={checker}
                />
              ))}
            </ul>
          )}
          {loaded.value.log.entries.length > shown ? (
            <div class="actions">
              <button type="button" class="secondary" onClick={() => setShown(shown + SHOWN)}>
                Show more
              </button>
            </div>
          ) : null}
          {loaded.value.log.truncated ? <p class="hint">Only the newest entries are shown here.</p> : null}
        </>
      ) : null}
    </Page>
  );
}

/** Opens the patient's records in the page (shared with the Timeline: read once per tab) to
 * say what each logged record is: the ledger names them by private codes. */
function RecordLabels(props: { wallet: PatientWallet; onLabels: (labels: Map<string, string>) => void }) {
  const records = useMyRecords(props.wallet);
  useEffect(() => {
    if (!records.result) return;
    props.onLabels(new Map(records.result.records.map((r) => [r.name.slice(0, 32), describe(r.resource).title])));
  }, [records.result]);
  if (records.loading) return <Loading what="Opening your records" />;
  if (records.error) return <ErrorMessage error={records.error} title="Could not open your records" />;
  return null;
}

function when(unixSeconds: number): string {
  return new Date(unixSeconds * 1000).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

function useName(directory: Directory, did: string, patient: string): string {
  const [name, setName] = useState(did === patient ? "You" : shortDid(did));
  useEffect(() => {
    let live = true;
    if (did !== patient) void directory.name(did).then((found) => live && setName(found));
    return () => {
      live = false;
    };
  }, [did]);
  return name;
}

function Alerts(props: { alerts: BreakGlassAlert[]; directory: Directory }) {
  if (!props.alerts.length) return null;
  return (
    <section aria-labelledby="alerts-title">
      <h2 class="section-title" id="alerts-title">
        Emergency access to your records
      </h2>
      <ul class="grant-list">
        {props.alerts.map((alert) => (
          <AlertItem key={alert.id} alert={alert} directory={props.directory} />
        ))}
      </ul>
    </section>
  );
}

function AlertItem(props: { alert: BreakGlassAlert; directory: Directory }) {
  const { alert } = props;
  const who = useName(props.directory, alert.requester, "");
  const org = useName(props.directory, alert.org, "");
  const running = alert.until * 1000 > Date.now();
  return (
    <li class="card alert-error break-glass" data-testid="break-glass-alert">
      <h3>
        {who} ({org}) broke the glass
      </h3>
      <p>
        They opened your {scopesInWords(alert.scopes)} in an emergency, without your sharing.
      </p>
      <p>
        <strong>Reason given:</strong> “{alert.reason}”
      </p>
      <p>
        <strong>{running ? "Until" : "Ended"}:</strong> {when(alert.until)}
        {alert.start ? ` (started ${when(alert.start)})` : ""}
      </p>
    </li>
  );
}

function AccessEntryItem(props: {
  access: LoggedAccess;
  patient: string;
  types: Map<string, RecordInfo>;
  label: string | undefined;
  directory: Directory;
  checker: ProofChecker;
}) {
  const { access, patient } = props;
  const entry = access.entry;
  const reader = useName(props.directory, entry.reader, patient);
  const org = useName(props.directory, entry.org, patient);
  const allowed = isAllowed(entry.outcome);
  const info = entry.record ? props.types.get(entry.record.slice(0, 32)) : undefined;
  const type = info ? typeLabel(info.type) : "Record";
  const record = !entry.record
    ? "A file that is not one of your records"
    : props.label
      ? `${type}: ${props.label} (version ${entry.version})`
      : `${type} ${entry.record.slice(0, 12)}…, version ${entry.version}`;
  return (
    <li class={`card access-entry ${allowed ? "access-allowed" : "access-denied"}`} data-testid="access-entry" data-outcome={allowed ? "allowed" : "denied"}>
      <div class="access-entry-head">
        <p class="access-entry-who">
          {reader}
          {entry.org && entry.org !== entry.reader ? <span> for {org}</span> : null}
        </p>
        <span class={allowed ? "outcome-allowed" : "outcome-denied"}>{OUTCOME_WORDS[entry.outcome] ?? entry.outcome}</span>
      </div>
      <p>
        <span class="record-label">{record}</span>
      </p>
      <p class="hint">
        {when(entry.at)}
        {entry.purpose ? ` · for ${purposePhrase(entry.purpose)}` : entry.reader === patient ? "" : " · no purpose stated"}
      </p>
      <ProofBadge access={access} checker={props.checker} />
    </li>
  );
}

const BADGE: Record<ProofResult["status"], { text: string; cls: string }> = {
  valid: { text: "Proof valid", cls: "badge badge-ok" },
  pending: { text: "Proof pending", cls: "badge badge-pending" },
  invalid: { text: "Proof invalid", cls: "badge badge-bad" },
};

function ProofBadge(props: { access: LoggedAccess; checker: ProofChecker }) {
  const [proof, setProof] = useState<ProofResult | null>(null);
  useEffect(() => {
    let live = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let tries = 0;
    const check = () =>
      void props.checker.prove(props.access).then((found) => {
        if (!live) return;
        setProof(found);
        // Not committed yet (or the block after it, under CometBFT): ask again a few times.
        if (found.status === "pending" && tries++ < PENDING_RETRIES) {
          timer = setTimeout(() => {
            props.checker.forget(props.access.tx);
            check();
          }, PENDING_RETRY_MS);
        }
      });
    setProof(null);
    check();
    return () => {
      live = false;
      if (timer) clearTimeout(timer);
    };
  }, [props.access, props.checker]);
  if (!proof) {
    return (
      <p>
        <span class="badge" data-testid="proof" data-status="checking">
          Checking proof…
        </span>
      </p>
    );
  }
  const badge = BADGE[proof.status];
  return (
    <div class="proof-details">
      <span class={badge.cls} data-testid="proof" data-status={proof.status}>
        {badge.text}
      </span>
      <details>
        <summary>What was checked</summary>
        {proof.checks.length ? (
          <ul>
            {proof.checks.map((check) => (
              <li key={check}>✓ {check}</li>
            ))}
          </ul>
        ) : null}
        {proof.problem ? <p>{proof.status === "pending" ? "Not yet: " : "Failed: "}{proof.problem}</p> : null}
        <p class="mono">
          Batch {access_short(props.access.tx)} in block {props.access.height}, entry {props.access.index}
        </p>
      </details>
    </div>
  );
}

function access_short(tx: string): string {
  return `${tx.slice(0, 12)}…`;
}
