// One transaction: its decoded envelope, result and events, its payload (the node shows an
// access-log batch or a break-glass only to those its query guard allows), and its inclusion
// proof checked in the page against the block hash the node reports.
import { useState } from "preact/hooks";
import type { Route } from "../../app/router";
import { ErrorMessage, Loading, Page, useAsync } from "../../app/ui";
import { fromHex } from "../../crypto/bytes";
import { NodeError, type NodeClient } from "../../wallet/node";
import { trustedHashes, txEvidence } from "../../wallet/proof-material";
import { checkTransactionEvidence } from "../../wallet/evidence";
import { type Check, ProofError } from "../../wallet/proof-checks";
import { decodeTx } from "../../wallet/tx-decode";
import { ProofChecks } from "./ProofChecks";
import { Did, ExplorerNav, Facts, Hash, ResultBadge, SignInNeeded, TxType, useExplorerClient, useNames } from "./common";

interface NodeTx {
  hash: string;
  index: number | string;
  code: number | string;
  log: string;
  height: number | string;
  tx: string;
  events: { type: string; attributes: Record<string, string> }[];
}

export function TransactionPage(props: { route: Route }) {
  const node = useExplorerClient();
  const hash = (props.route.params.get("hash") ?? "").toLowerCase();
  const valid = /^[0-9a-f]{64}$/.test(hash);
  const loaded = useAsync(async () => {
    if (!node || !valid) return null;
    try {
      return { found: await node.transaction<NodeTx>(hash), hidden: null };
    } catch (error) {
      if (error instanceof NodeError && error.status === 403) return { found: null, hidden: error.message };
      throw error;
    }
  }, [node, hash]);
  const nameOf = useNames(node);
  if (!valid) {
    return (
      <Page title="Transaction">
        <ExplorerNav current="other" />
        <ErrorMessage error={new Error("This link names no transaction: a transaction's hash is 64 hexadecimal characters.")} />
      </Page>
    );
  }
  const value = loaded.value;
  return (
    <Page title="Transaction">
      <ExplorerNav current="other" />
      {!node ? <SignInNeeded what="transactions" /> : null}
      {loaded.loading ? <Loading what="Reading the transaction" /> : null}
      {loaded.error ? <ErrorMessage error={loaded.error} /> : null}
      {value?.hidden ? (
        <div class="alert alert-info" role="status">
          The node does not show you this transaction: {value.hidden} Access-log batches are shown to the patients they name
          and to member organisations; a break-glass to its patient, the clinician who broke the glass and members.
        </div>
      ) : null}
      {value?.found && node ? <TxDetails node={node} found={value.found} nameOf={nameOf} /> : null}
    </Page>
  );
}

function TxDetails(props: { node: NodeClient; found: NodeTx; nameOf: (did: string) => string | null }) {
  const { found, nameOf } = props;
  const raw = fromHex(found.tx);
  const height = Number(found.height);
  let decoded: ReturnType<typeof decodeTx> | null = null;
  let problem: unknown = null;
  try {
    decoded = decodeTx(raw);
  } catch (error) {
    problem = error;
  }
  const code = Number(found.code);
  return (
    <>
      <Facts
        rows={[
          ["Hash", <Hash value={found.hash} full />],
          ["Block", <a href={`#/explorer/block?height=${height}`}>Block {height}</a>],
          ["Position", `Transaction ${Number(found.index) + 1} of the block`],
          ["Result", <>
            <ResultBadge code={code} />
            {found.log ? <span> {found.log}</span> : null}
          </>],
          ["Size", `${raw.length.toLocaleString()} bytes`],
          ...(decoded
            ? ([
                ["Type", <TxType type={decoded.type} />],
                ["Sender", <Did did={decoded.sender} name={nameOf(decoded.sender)} />],
                ["Sender's transaction number (nonce)", String(decoded.nonce)],
                ["Chain", <span class="mono">{decoded.chainId}</span>],
                ["Signature", <Hash value={Array.from(decoded.signature, (b) => b.toString(16).padStart(2, "0")).join("")} full />],
              ] as [string, preact.ComponentChildren][])
            : []),
        ]}
      />
      {problem ? <ErrorMessage error={problem} title="The transaction's bytes are not a signed envelope" /> : null}
      {decoded ? <RecordLinks payload={decoded.payload} type={decoded.type} /> : null}
      <InclusionProof node={props.node} hash={found.hash} />
      {found.events?.length ? (
        <>
          <h2>Events</h2>
          <pre class="payload mono" tabIndex={0} aria-label="Events">
            {JSON.stringify(found.events, null, 2)}
          </pre>
        </>
      ) : null}
      {decoded ? (
        <>
          <h2>Payload</h2>
          <p class="hint">What the sender signed. Records are not in it: only their hashes and who may open them.</p>
          <pre class="payload mono" tabIndex={0} aria-label="Payload" data-testid="tx-payload">
            {JSON.stringify(decoded.payload, null, 2)}
          </pre>
        </>
      ) : null}
    </>
  );
}

/** For an anchor: links to the anchored records' pages. */
function RecordLinks(props: { type: string; payload: Record<string, unknown> }) {
  const anchors =
    props.type === "records/anchor"
      ? [props.payload]
      : props.type === "records/anchor_batch" && Array.isArray(props.payload.anchors)
        ? (props.payload.anchors as Record<string, unknown>[])
        : [];
  if (anchors.length === 0) return null;
  return (
    <>
      <h2>Records anchored</h2>
      <ul>
        {anchors.map((a, i) => (
          <li key={i}>
            <a href={`#/explorer/record?patient=${encodeURIComponent(String(a.patient))}&name=${encodeURIComponent(String(a.record))}`}>
              {String(a.resource_type)} record, version {String(a.version)}
            </a>
          </li>
        ))}
      </ul>
    </>
  );
}

function InclusionProof(props: { node: NodeClient; hash: string }) {
  const [state, setState] = useState<{ running: boolean; checks?: Check[]; ok?: boolean; error?: unknown }>({ running: false });
  const run = async () => {
    setState({ running: true });
    try {
      const evidence = await txEvidence(props.node, props.hash);
      const trust = await trustedHashes(props.node, [Number(evidence.height)]);
      const { checks } = checkTransactionEvidence(evidence, trust);
      setState({ running: false, checks, ok: true });
    } catch (error) {
      if (error instanceof ProofError) setState({ running: false, checks: error.checks, ok: false });
      else setState({ running: false, error });
    }
  };
  return (
    <>
      <h2>Proof</h2>
      <p class="hint">Checks, in this page, that the transaction is in its block, that its result is the one the block commits to, and that the block is the one the node reports.</p>
      <div class="actions">
        <button type="button" onClick={run} disabled={state.running}>
          Check proof
        </button>
      </div>
      {state.running ? <Loading what="Checking the proof" /> : null}
      {state.error ? <ErrorMessage error={state.error} /> : null}
      {state.checks ? (
        <ProofChecks checks={state.checks} ok={state.ok === true} trustedBy={state.ok ? "the transaction is in the block this node reports" : undefined} />
      ) : null}
    </>
  );
}
