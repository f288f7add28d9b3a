// The consortium: member organisations (identity/members), their validator keys and status,
// and their practitioners; the node's own consensus from /status.
import type { Route } from "../../app/router";
import { Empty, ErrorMessage, Loading, Page, useAsync } from "../../app/ui";
import { NodeClient, type NodeStatus } from "../../wallet/node";
import { Did, ExplorerNav, Hash, ScrollTable, SignInNeeded, useExplorerClient } from "./common";
import { sha256 } from "@noble/hashes/sha2.js";
import { fromHex, hex } from "../../crypto/bytes";

interface Member {
  did: string;
  name: string;
  since: number;
  validator_pub_key: string;
}

interface Row extends Member {
  practitioners: number;
  address: string; // CometBFT's validator address: SHA-256(key)[:20], upper-case hex
}

const publicNode = new NodeClient(null, null);

async function load(node: NodeClient): Promise<{ status: NodeStatus; rows: Row[] }> {
  const [status, members] = await Promise.all([publicNode.status(), node.query<Member[]>("identity", "members")]);
  const rows = await Promise.all(
    members.map(async (member) => {
      const staff = await node.query<unknown[]>("identity", "practitioners", { org: member.did });
      const key = member.validator_pub_key;
      const address = /^[0-9a-f]{64}$/i.test(key) ? hex(sha256(fromHex(key)).slice(0, 20)).toUpperCase() : "";
      return { ...member, practitioners: staff.length, address };
    }),
  );
  return { status, rows: rows.sort((a, b) => a.since - b.since || a.name.localeCompare(b.name)) };
}

export function ValidatorsPage(_props: { route: Route }) {
  const node = useExplorerClient();
  const loaded = useAsync(async () => (node ? load(node) : null), [node]);
  const value = loaded.value;
  const network = value?.status.consensus === "cometbft";
  const ownAddress = String(value?.status.validator_address ?? "").toUpperCase();
  return (
    <Page
      title="Members and validators"
      intro="The organisations of the consortium. Members vote on who joins; under CometBFT each member with a validator key signs blocks, and more than two thirds of their voting power must sign each one."
    >
      <ExplorerNav current="validators" />
      {!node ? <SignInNeeded what="the members" /> : null}
      {loaded.loading ? <Loading what="Reading the members" /> : null}
      {loaded.error ? <ErrorMessage error={loaded.error} /> : null}
      {value ? (
        <>
          <p>
            {network
              ? "This ledger runs on CometBFT: the validators below make and sign its blocks together."
              : "This ledger runs on a single node (solo mode): that node makes the blocks, and no validator signs them. Trust its blocks by their hashes."}
          </p>
          {value.rows.length === 0 ? (
            <Empty>The ledger has no members.</Empty>
          ) : (
            <ScrollTable label="Members" testid="members" columns={["Organisation", "Member since", "Validator key", "Status", "Practitioners"]}>
              {value.rows.map((row) => (
                <tr key={row.did} data-testid="member">
                  <td>
                    <Did did={row.did} name={row.name} />
                  </td>
                  <td>{row.since === 0 ? "Founder (genesis)" : <a href={`#/explorer/block?height=${row.since}`}>Block {row.since}</a>}</td>
                  <td>{row.validator_pub_key ? <Hash value={row.validator_pub_key} /> : <span class="empty">None</span>}</td>
                  <td>
                    {row.validator_pub_key ? (
                      <>
                        <span class="badge badge-ok">Validator</span>
                        {network && row.address === ownAddress ? <span> (this node)</span> : null}
                        {row.address ? (
                          <div class="hint">
                            Address <span class="mono">{row.address}</span>
                          </div>
                        ) : null}
                      </>
                    ) : (
                      <span class="badge">Member, not a validator</span>
                    )}
                  </td>
                  <td>{row.practitioners}</td>
                </tr>
              ))}
            </ScrollTable>
          )}
        </>
      ) : null}
    </Page>
  );
}
