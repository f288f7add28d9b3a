// Access log: every read of the patient's records (by whom, for which organisation, which
// record, when, why, allowed or denied), break-glass alerts first, and each entry's proof
// checked in this page against the block that committed it (wallet/audit.ts). Reads are
// grouped as a person tells them ("Dr. Demo read 98 of your records on 24 Nov for emergency
// treatment"), each group opening to its records; the patient's own reads come last.
import { useEffect, useMemo, useState } from "preact/hooks";
import { useSession } from "../../app/session";
import { Empty, ErrorMessage, Loading, Page, useAsync } from "../../app/ui";
import {
  groupAccesses,
  groupProofStatus,
  isAllowed,
  loadAccessLog,
  ProofChecker,
  proveEach,
  type AccessGroup,
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

/** Why reads were allowed or refused (audit.ts basisOf: the chain's outcome, or "emergency"
 * for a read under a break-glass). */
const BASIS_WORDS: Record<string, string> = {
  patient: "Allowed: you read your own record",
  author: "Allowed: their organisation wrote these records",
  grant: "Allowed by your sharing",
  delegate: "Allowed: someone you trust with your sharing",
  emergency: "Allowed: emergency access (break-glass)",
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
      return { log, types, groups: groupAccesses(log.entries, wallet.did) };
    },
    [wallet.did],
  );
  const checker = useMemo(() => new ProofChecker(wallet.node), [wallet.did, loaded.value]);
  const directory = useMemo(() => new Directory(wallet.node), [wallet.did]);
  const [labels, setLabels] = useState<Map<string, string>>(new Map());
  const groups = loaded.value?.groups ?? [];
  const others = groups.filter((g) => !g.own);
  const own = groups.filter((g) => g.own);
  const context: EntryContext = { patient: wallet.did, types: loaded.value?.types ?? new Map(), labels, directory, checker };
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
          <section aria-labelledby="others-title">
            <h2 class="section-title" id="others-title">
              Reads by others
            </h2>
            {others.length === 0 ? (
              <Empty>Nobody else has read your records yet.</Empty>
            ) : (
              <ul class="access-list">
                {others.map((group) => (
                  <AccessGroupItem key={group.key} group={group} context={context} />
                ))}
              </ul>
            )}
          </section>
          {own.length ? (
            <section aria-labelledby="own-title">
              <h2 class="section-title" id="own-title">
                Your own reads
              </h2>
              <p class="hint access-hint">Each time this portal opens your records to show them to you, that is a read of yours, logged like any other.</p>
              <ul class="access-list">
                {own.map((group) => (
                  <AccessGroupItem key={group.key} group={group} context={context} />
                ))}
              </ul>
            </section>
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

interface EntryContext {
  patient: string;
  types: Map<string, RecordInfo>;
  labels: Map<string, string>;
  directory: Directory;
  checker: ProofChecker;
}

function dayText(unixSeconds: number): string {
  return new Date(unixSeconds * 1000).toLocaleDateString(undefined, { dateStyle: "medium" });
}

function timeText(unixSeconds: number): string {
  return new Date(unixSeconds * 1000).toLocaleTimeString(undefined, { timeStyle: "short" });
}


/** Every entry's proof (a batch is checked once for all its entries), asked again a few
 * times while some are pending (their batch not committed yet, or the block after it). */
function useProofs(accesses: LoggedAccess[], checker: ProofChecker): Map<LoggedAccess, ProofResult> {
  const [proofs, setProofs] = useState<Map<LoggedAccess, ProofResult>>(new Map());
  useEffect(() => {
    let live = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let tries = 0;
    const run = async () => {
      const results = await proveEach(checker, accesses);
      if (!live) return;
      setProofs(results);
      const pending = accesses.filter((access) => results.get(access)?.status === "pending");
      if (pending.length && tries++ < PENDING_RETRIES) {
        timer = setTimeout(() => {
          for (const tx of new Set(pending.map((access) => access.tx))) checker.forget(tx);
          void run();
        }, PENDING_RETRY_MS);
      }
    };
    setProofs(new Map());
    void run();
    return () => {
      live = false;
      if (timer) clearTimeout(timer);
    };
  }, [accesses, checker]);
  return proofs;
}

/** "Dr. Demo (Demo Hospital)", "You", or the organisation alone when it read as itself. */
function useReaderName(group: AccessGroup, context: EntryContext): string {
  const reader = useName(context.directory, group.reader, context.patient);
  const org = useName(context.directory, group.org, context.patient);
  if (group.own) return "You";
  return group.org && group.org !== group.reader ? `${reader} (${org})` : reader;
}

function groupSentence(who: string, group: AccessGroup): string {
  const count = group.records === 1 ? "1 of your records" : `${group.records} of your records`;
  const reads = group.entries.length > group.records ? ` (${group.entries.length} reads)` : "";
  if (group.own) return `You opened ${count}${reads}`;
  return group.allowed ? `${who} read ${count}${reads}` : `${who} asked for ${count}${reads} and was refused`;
}

function timeSpan(group: AccessGroup): string {
  const [first, last] = [timeText(group.first), timeText(group.last)];
  return first === last ? `at ${first}` : `from ${first} to ${last}`;
}

const GROUP_BADGE: Record<ReturnType<typeof groupProofStatus>, { text: (n: number) => string; cls: string }> = {
  valid: { text: (n) => (n === 1 ? "Proof valid" : `All ${n} proofs valid`), cls: "badge badge-ok" },
  pending: { text: () => "Proofs pending", cls: "badge badge-pending" },
  invalid: { text: () => "A proof is invalid", cls: "badge badge-bad" },
  checking: { text: () => "Checking proofs…", cls: "badge" },
};

const ENTRIES_SHOWN = 50; // entries rendered in an opened group at first; "Show more" adds as many

function AccessGroupItem(props: { group: AccessGroup; context: EntryContext }) {
  const { group, context } = props;
  const who = useReaderName(group, context);
  const proofs = useProofs(group.entries, context.checker);
  const [shown, setShown] = useState(ENTRIES_SHOWN);
  const verdict = groupProofStatus(group.entries.map((access) => proofs.get(access)));
  const badge = GROUP_BADGE[verdict];
  const basis = group.own ? "" : BASIS_WORDS[group.basis] ?? group.basis;
  const purpose = group.purpose ? `for ${purposePhrase(group.purpose)}` : group.own ? "" : "no purpose stated";
  return (
    <li
      class={`card access-group ${group.allowed ? "access-allowed" : "access-denied"}`}
      data-testid="access-group"
      data-outcome={group.allowed ? "allowed" : "denied"}
    >
      <details>
        <summary>
          <span class="access-group-who">{groupSentence(who, group)}</span>
          <span class="access-group-meta">
            {dayText(group.first)} {timeSpan(group)}
            {purpose ? ` · ${purpose}` : ""}
          </span>
          <span class="access-group-status">
            {basis ? <span class={group.allowed ? "outcome-allowed" : "outcome-denied"}>{basis}</span> : null}
            <span class={badge.cls} data-testid="group-proof" data-status={verdict}>
              {badge.text(group.entries.length)}
            </span>
          </span>
        </summary>
        <ul class="access-entries" aria-label="Each record read">
          {group.entries.slice(0, shown).map((access, i) => (
            <AccessEntryItem key={`${access.tx}/${access.index}/${i}`} access={access} context={context} proof={proofs.get(access)} />
          ))}
        </ul>
        {group.entries.length > shown ? (
          <div class="actions">
            <button type="button" class="secondary" onClick={() => setShown(shown + ENTRIES_SHOWN)}>
              Show {Math.min(ENTRIES_SHOWN, group.entries.length - shown)} more
            </button>
          </div>
        ) : null}
      </details>
    </li>
  );
}

function AccessEntryItem(props: { access: LoggedAccess; context: EntryContext; proof: ProofResult | undefined }) {
  const { access, context } = props;
  const entry = access.entry;
  const allowed = isAllowed(entry.outcome);
  const info = entry.record ? context.types.get(entry.record.slice(0, 32)) : undefined;
  const type = info ? typeLabel(info.type) : "Record";
  const label = context.labels.get(entry.record.slice(0, 32));
  // Versions matter only once a record was changed: "version 1" is noise to a patient.
  const version = entry.version > 1 ? ` (version ${entry.version})` : "";
  const record = !entry.record
    ? "A file that is not one of your records"
    : label
      ? `${type}: ${label}${version}`
      : `${type} ${entry.record.slice(0, 12)}…${version}`;
  return (
    <li class="access-entry" data-testid="access-entry" data-outcome={allowed ? "allowed" : "denied"}>
      <p>
        <span class="record-label">{record}</span>
      </p>
      <div class="access-entry-foot">
        <span class="hint">{timeText(entry.at)}</span>
        <ProofBadge access={access} proof={props.proof} />
      </div>
    </li>
  );
}

const BADGE: Record<ProofResult["status"], { text: string; cls: string }> = {
  valid: { text: "Proof valid", cls: "badge badge-ok" },
  pending: { text: "Proof pending", cls: "badge badge-pending" },
  invalid: { text: "Proof invalid", cls: "badge badge-bad" },
};

function ProofBadge(props: { access: LoggedAccess; proof: ProofResult | undefined }) {
  const { proof } = props;
  if (!proof) {
    return (
      <span class="badge" data-testid="proof" data-status="checking">
        Checking proof…
      </span>
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
