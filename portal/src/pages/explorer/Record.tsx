// A record's versions and their anchors, each with "Check proof": the page gathers the
// anchor's evidence from the node and checks it itself (wallet/proofs.ts), showing each
// check. The record's content stays encrypted: the page checks that the anchor is in the
// block, succeeded, was signed by its author's registered key, and names this record.
import { useState } from "preact/hooks";
import type { Route } from "../../app/router";
import { Empty, ErrorMessage, Loading, Page, useAsync } from "../../app/ui";
import type { NodeClient } from "../../wallet/node";
import { checkVersionProof, recordVersions, type AnchorEntry, type RecordVersions } from "../../wallet/proof-material";
import { type Check, ProofError } from "../../wallet/proof-checks";
import { ProofChecks } from "./ProofChecks";
import { Did, ExplorerNav, Facts, Hash, ScrollTable, SignInNeeded, useExplorerClient, useNames } from "./common";

const DID = /^did:key:z[1-9A-HJ-NP-Za-km-z]{40,60}$/;
const NAME = /^[0-9a-f]{64}$/;

export function RecordPage(props: { route: Route }) {
  const node = useExplorerClient();
  const patient = props.route.params.get("patient") ?? "";
  const name = props.route.params.get("name") ?? "";
  const valid = DID.test(patient) && NAME.test(name);
  const loaded = useAsync(async () => (node && valid ? recordVersions(node, patient, name) : null), [node, patient, name]);
  const nameOf = useNames(node);
  if (!valid) {
    return (
      <Page title="Record">
        <ExplorerNav current="other" />
        <ErrorMessage error={new Error("This link names no record: it needs a patient's did and a record's name (64 hexadecimal characters).")} />
      </Page>
    );
  }
  const versions = loaded.value;
  return (
    <Page title="Record on the ledger" intro="What the ledger holds of one record: each version's anchor (hashes, author, who may open it), never its content.">
      <ExplorerNav current="other" />
      {!node ? <SignInNeeded what="records" /> : null}
      {loaded.loading ? <Loading what="Reading the record's anchors" /> : null}
      {loaded.error ? <ErrorMessage error={loaded.error} /> : null}
      {versions && node ? <Versions node={node} versions={versions} nameOf={nameOf} /> : null}
    </Page>
  );
}

function Versions(props: { node: NodeClient; versions: RecordVersions; nameOf: (did: string) => string | null }) {
  const { versions, nameOf } = props;
  const [selected, setSelected] = useState<number | null>(null);
  const history = [...versions.history].sort((a, b) => b.version - a.version);
  return (
    <>
      <Facts
        rows={[
          ["Patient", <Did did={versions.patient} name={nameOf(versions.patient)} />],
          ["Record name", <Hash value={versions.record} full />],
          ["Type", versions.resource_type],
          ["Scope", versions.scope],
          ["Versions", String(versions.versions)],
          ...(versions.erased_at
            ? ([["Erased", <a href={`#/explorer/block?height=${versions.erased_at}`}>at block {versions.erased_at}</a>]] as [string, preact.ComponentChildren][])
            : []),
        ]}
      />
      {history.length === 0 ? (
        <Empty>No versions.</Empty>
      ) : (
        <ScrollTable label="Versions" testid="versions" columns={["Version", "Block", "Author", "Encrypted copy (hash)", "Proof"]}>
          {history.map((anchor) => (
            <tr key={anchor.version} data-testid="version">
              <td>
                {anchor.version}
                {anchor.tombstone ? <span class="badge"> deleted</span> : null}
              </td>
              <td>
                <a href={`#/explorer/block?height=${anchor.height}`}>{anchor.height}</a>
              </td>
              <td>
                <Did did={anchor.author} name={nameOf(anchor.author)} />
              </td>
              <td>{anchor.blob_hash ? <Hash value={anchor.blob_hash} /> : "—"}</td>
              <td>
                <button type="button" class="secondary" onClick={() => setSelected(anchor.version)} aria-label={`Check proof of version ${anchor.version}`}>
                  Check proof
                </button>
              </td>
            </tr>
          ))}
        </ScrollTable>
      )}
      {selected !== null ? (
        <VersionProof key={selected} node={props.node} versions={versions} anchor={history.find((a) => a.version === selected)!} />
      ) : null}
    </>
  );
}

function VersionProof(props: { node: NodeClient; versions: RecordVersions; anchor: AnchorEntry }) {
  const result = useAsync(async (): Promise<{ checks: Check[]; ok: boolean; height: number }> => {
    try {
      const verified = await checkVersionProof(props.node, props.versions, props.anchor);
      return { checks: verified.checks, ok: true, height: verified.anchor.block.height };
    } catch (error) {
      if (error instanceof ProofError) return { checks: error.checks, ok: false, height: props.anchor.height };
      throw error;
    }
  }, [props.anchor.version]);
  return (
    <section aria-labelledby="proof-title">
      <h2 id="proof-title">Proof of version {props.anchor.version}</h2>
      {result.loading ? <Loading what="Gathering and checking the proof" /> : null}
      {result.error ? <ErrorMessage error={result.error} /> : null}
      {result.value ? (
        <ProofChecks
          checks={result.value.checks}
          ok={result.value.ok}
          trustedBy={`block ${result.value.height}'s hash is the one this node reports`}
          note="Checked in this page. The record's content is encrypted and was not checked here: only the patient and those it shares with can open it, and their app checks it against the anchored commitment."
        />
      ) : null}
    </section>
  );
}
