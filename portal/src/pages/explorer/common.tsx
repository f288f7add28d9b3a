// What the explorer's pages share: the node client of whoever is signed in (the node API
// answers only signed requests), the names the chain knows for dids, and small renderers.
import type { ComponentChildren } from "preact";
import { useEffect, useState } from "preact/hooks";
import { useSession, type Session } from "../../app/session";
import { Notice } from "../../app/ui";
import type { NodeClient } from "../../wallet/node";
import { codeName } from "../../wallet/tx-decode";
import "./explorer.css";

/** The signed-in person's node client: a patient wallet's, or a practitioner key session's. */
export function clientOf(session: Session): NodeClient | null {
  if (session.kind === "patient") return session.wallet.node;
  if (session.kind === "practitioner") {
    const practitioner = session.practitioner as { node?: NodeClient | null };
    return practitioner.node ?? null;
  }
  return null;
}

export function useExplorerClient(): NodeClient | null {
  return clientOf(useSession());
}

/** Shown instead of what needs signed requests. */
export function SignInNeeded(props: { what: string }) {
  const session = useSession();
  const smart = session.kind === "practitioner";
  return (
    <Notice kind="info">
      The ledger node shows {props.what} only to people it knows: every request is signed with a key registered on the
      ledger.{" "}
      {smart ? (
        <>
          You are signed in with your organisation's backend credentials, which the node does not take:{" "}
          <a href="#/practitioner/sign-in">sign in with your practitioner key file</a> to explore.
        </>
      ) : (
        <>
          <a href="#/patient/start">Sign in as a patient</a> or <a href="#/practitioner/sign-in">as a clinician</a> (with
          your key file) to explore.
        </>
      )}
    </Notice>
  );
}

/** Explorer sub-navigation (the top navigation has one "Explorer" entry). */
export function ExplorerNav(props: { current: "blocks" | "validators" | "other" }) {
  return (
    <nav class="explorer-nav" aria-label="Explorer">
      <a href="#/explorer" aria-current={props.current === "blocks" ? "page" : undefined}>
        Latest blocks
      </a>
      <a href="#/explorer/validators" aria-current={props.current === "validators" ? "page" : undefined}>
        Members and validators
      </a>
    </nav>
  );
}

interface Member {
  did: string;
  name: string;
  since: number;
  validator_pub_key: string;
}

const names = new Map<string, string>();
let namesLoaded: Promise<void> | null = null;

/** Names the chain gives dids: member organisations, their practitioners and nodes. */
function loadNames(node: NodeClient): Promise<void> {
  if (!namesLoaded) {
    namesLoaded = (async () => {
      const members = await node.query<Member[]>("identity", "members");
      for (const member of members) names.set(member.did, member.name);
      await Promise.all(
        members.map(async (member) => {
          const staff = await node.query<{ did: string; name?: string }[]>("identity", "practitioners", { org: member.did });
          for (const person of staff) if (person.name) names.set(person.did, `${person.name} (${member.name})`);
        }),
      );
    })().catch(() => {
      namesLoaded = null; // not fatal: dids are shown instead
    });
  }
  return namesLoaded;
}

const asked = new Set<string>();

/** What the chain says of a did it has no name for: its kind (patients have no name on the
 * ledger, by design), a node's organisation. */
async function describe(node: NodeClient, did: string): Promise<void> {
  const found = await node.query<{ kind?: string; org?: string; name?: string }>("identity", "identity", { did });
  const org = found.org ? names.get(found.org) : undefined;
  const words: Record<string, string> = { patient: "A patient", practitioner: "A practitioner", organisation: "An organisation" };
  if (found.name) names.set(did, found.name);
  else if (found.kind === "node") names.set(did, org ? `Node of ${org}` : "A node");
  else if (found.kind && words[found.kind]) names.set(did, words[found.kind]!);
}

/** A did's name where the chain knows it; the signed-in person is "you". Dids it has no name
 * for are asked once (identity/identity) and shown by kind. */
export function useNames(node: NodeClient | null): (did: string) => string | null {
  const [, setVersion] = useState(0);
  const refresh = () => setVersion((v) => v + 1);
  useEffect(() => {
    if (node) void loadNames(node).then(refresh);
  }, [node]);
  return (did: string) => {
    if (node && did === node.did) return "you";
    const known = names.get(did);
    if (known === undefined && node && !asked.has(did)) {
      asked.add(did);
      void loadNames(node)
        .then(() => (names.has(did) ? undefined : describe(node, did)))
        .then(refresh, () => undefined); // unknown to the chain: the did alone is shown
    }
    return known ?? null;
  };
}

export function Did(props: { did: string; name?: string | null }) {
  const short = props.did.length > 24 ? `${props.did.slice(0, 14)}…${props.did.slice(-6)}` : props.did;
  return (
    <span class="did" title={props.did}>
      {props.name ? <span class="did-name">{props.name} </span> : null}
      <span class="mono">{props.name ? `(${short})` : short}</span>
    </span>
  );
}

export function Hash(props: { value: string; href?: string; full?: boolean }) {
  const shown = props.full ? props.value : `${props.value.slice(0, 10)}…${props.value.slice(-6)}`;
  return props.href ? (
    <a class="mono" href={props.href} title={props.value}>
      {shown}
    </a>
  ) : (
    <span class="mono" title={props.value}>
      {shown}
    </span>
  );
}

export function ResultBadge(props: { code: number }) {
  return props.code === 0 ? (
    <span class="badge badge-ok">Success</span>
  ) : (
    <span class="badge badge-bad">
      Failed: {codeName(props.code)} ({props.code})
    </span>
  );
}

/** Block times as a person reads them, in the browser's time zone (the chain's are UTC). */
export function formatTime(rfc3339: string): string {
  const when = new Date(rfc3339.replace(/\.(\d{3})\d*Z$/, ".$1Z"));
  return Number.isNaN(when.getTime()) ? rfc3339 : when.toLocaleString();
}

/** Definition list of label/value rows. */
export function Facts(props: { rows: [string, ComponentChildren][] }) {
  return (
    <dl class="facts">
      {props.rows.map(([label, value]) => (
        <div key={label}>
          <dt>{label}</dt>
          <dd>{value}</dd>
        </div>
      ))}
    </dl>
  );
}

/** Plain words for transaction types. */
const TYPE_WORDS: Record<string, string> = {
  "records/anchor": "Record anchored",
  "records/anchor_batch": "Records anchored (batch)",
  "records/publish_scope_key": "Scope key published",
  "records/erase": "Records erased",
  "identity/register_patient": "Patient registered",
  "identity/register_practitioner": "Practitioner registered",
  "identity/register_node": "Node registered",
  "identity/rotate_key": "Key rotated",
  "identity/apply_membership": "Membership applied for",
  "identity/approve_membership": "Membership vote",
  "consent/grant": "Access granted",
  "consent/revoke": "Access revoked",
  "consent/share_keys": "Keys shared",
  "consent/open_emergency": "Emergency access opened",
  "consent/break_glass": "Break-glass access",
  "audit/record_batch": "Access log batch",
};

export function TxType(props: { type: string }) {
  const words = TYPE_WORDS[props.type];
  return (
    <span class="tx-type">
      {words ? <span>{words} </span> : null}
      <span class="mono">{props.type}</span>
    </span>
  );
}

/** A table that scrolls sideways on a narrow screen (reachable by keyboard), its columns named. */
export function ScrollTable(props: { label: string; testid: string; columns: string[]; children: ComponentChildren }) {
  return (
    <div class="table-wrap" tabIndex={0} role="region" aria-label={props.label}>
      <table data-testid={props.testid}>
        <thead>
          <tr>
            {props.columns.map((column) => (
              <th key={column} scope="col">
                {column}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>{props.children}</tbody>
      </table>
    </div>
  );
}
