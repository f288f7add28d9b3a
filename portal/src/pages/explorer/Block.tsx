// One block: its header, and its transactions with type, sender, size and result. The block
// lists hashes and results; each transaction's envelope comes from GET /txs/{hash}.
import type { Route } from "../../app/router";
import { Empty, ErrorMessage, Loading, Page, useAsync } from "../../app/ui";
import { fromHex } from "../../crypto/bytes";
import { NodeError, type NodeClient } from "../../wallet/node";
import type { NodeBlock } from "../../wallet/proof-material";
import { decodeTx, type DecodedTx } from "../../wallet/tx-decode";
import { Did, ExplorerNav, Facts, formatTime, Hash, ResultBadge, ScrollTable, SignInNeeded, TxType, useExplorerClient, useNames } from "./common";

const CONCURRENT = 8;

interface Row {
  hash: string;
  index: number;
  code: number;
  log: string;
  tx: DecodedTx | null;
  size: number | null;
  hidden: string | null; // why the node does not show this transaction to the caller
}

async function rowsOf(node: NodeClient, block: NodeBlock): Promise<Row[]> {
  const rows: Row[] = block.txs.map((t) => ({ hash: t.hash, index: t.index, code: t.code, log: t.log, tx: null, size: null, hidden: null }));
  let next = 0;
  const worker = async () => {
    while (next < rows.length) {
      const row = rows[next++]!;
      try {
        const found = await node.transaction<{ tx: string }>(row.hash);
        const raw = fromHex(found.tx);
        row.size = raw.length;
        row.tx = decodeTx(raw);
      } catch (error) {
        if (error instanceof NodeError && error.status === 403) row.hidden = error.message;
        else throw error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENT, rows.length) }, worker));
  return rows;
}

export function BlockPage(props: { route: Route }) {
  const node = useExplorerClient();
  const heightText = props.route.params.get("height") ?? "";
  const height = /^[0-9]{1,15}$/.test(heightText) ? Number(heightText) : NaN;
  const title = Number.isFinite(height) ? `Block ${height}` : "Block";
  const loaded = useAsync(async () => {
    if (!node || !Number.isFinite(height)) return null;
    const block = await node.block<NodeBlock>(height);
    return { block, rows: await rowsOf(node, block) };
  }, [node, heightText]); // not `height`: NaN never equals itself, and would re-run the effect on every render
  const nameOf = useNames(node);
  if (!Number.isFinite(height) || height < 1) {
    return (
      <Page title="Block">
        <ExplorerNav current="other" />
        <ErrorMessage error={new Error("This link names no block: a block's height is a whole number from 1.")} />
      </Page>
    );
  }
  return (
    <Page title={title}>
      <ExplorerNav current="other" />
      {!node ? <SignInNeeded what="blocks" /> : null}
      {loaded.loading ? <Loading what="Reading the block" /> : null}
      {loaded.error ? <ErrorMessage error={loaded.error} /> : null}
      {loaded.value ? (
        <>
          <Facts
            rows={[
              ["Time", formatTime(loaded.value.block.header.time)],
              ["Hash", <Hash value={loaded.value.block.hash} full />],
              ["Previous block", height > 1 ? <a href={`#/explorer/block?height=${height - 1}`}>Block {height - 1}</a> : "None (the first block)"],
              ["Transactions", String(loaded.value.block.header.num_txs)],
              ["Transactions root (data_hash)", <Hash value={String(loaded.value.block.header.data_hash)} full />],
              ...(loaded.value.block.header.results_hash
                ? ([["Results root (results_hash)", <Hash value={String(loaded.value.block.header.results_hash)} full />]] as [string, preact.ComponentChildren][])
                : []),
              ["State after the block (app_hash)", <Hash value={String(loaded.value.block.header.app_hash)} full />],
            ]}
          />
          <p>
            <a href={`#/explorer/block?height=${height + 1}`}>Next block</a>
          </p>
          <h2>Transactions</h2>
          {loaded.value.rows.length === 0 ? (
            <Empty>This block has no transactions.</Empty>
          ) : (
            <ScrollTable label="Transactions of the block" testid="block-txs" columns={["#", "Type", "Sender", "Size", "Result"]}>
              {loaded.value.rows.map((row) => (
                <tr key={row.hash} data-testid="tx-row">
                  <td>
                    <a href={`#/explorer/tx?hash=${row.hash}`} title={row.hash}>
                      {row.index + 1}
                    </a>
                  </td>
                  <td>{row.tx ? <TxType type={row.tx.type} /> : <span class="empty">{row.hidden ? "Not shown to you" : "Unreadable"}</span>}</td>
                  <td>{row.tx ? <Did did={row.tx.sender} name={nameOf(row.tx.sender)} /> : "—"}</td>
                  <td>{row.size === null ? "—" : `${row.size.toLocaleString()} bytes`}</td>
                  <td>
                    <ResultBadge code={row.code} />
                  </td>
                </tr>
              ))}
            </ScrollTable>
          )}
        </>
      ) : null}
    </Page>
  );
}
