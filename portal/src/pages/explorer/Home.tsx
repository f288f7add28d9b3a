// Explorer home: the chain's id and height (GET /status, public), the latest blocks (signed),
// refreshed every few seconds in place: nothing re-mounts, so focus and scrolling stay put.
import { useEffect, useRef, useState } from "preact/hooks";
import type { Route } from "../../app/router";
import { navigate } from "../../app/router";
import { Empty, ErrorMessage, Field, Loading, Page } from "../../app/ui";
import { NodeClient, type NodeStatus } from "../../wallet/node";
import type { NodeBlock } from "../../wallet/proof-material";
import { ExplorerNav, formatTime, Hash, ScrollTable, SignInNeeded, useExplorerClient } from "./common";

const LATEST = 10;
const REFRESH_MS = 4000;
const publicNode = new NodeClient(null, null);

interface Snapshot {
  status: NodeStatus;
  blocks: NodeBlock[] | null; // null: not signed in
}

async function snapshot(node: NodeClient | null, previous: NodeBlock[] | null): Promise<Snapshot> {
  const status = await publicNode.status();
  if (!node) return { status, blocks: null };
  const known = new Map((previous ?? []).map((b) => [b.header.height, b]));
  const heights: number[] = [];
  for (let h = status.height; h >= 1 && heights.length < LATEST; h--) heights.push(h);
  // a block never changes: only the new ones are fetched on a refresh
  const blocks = await Promise.all(heights.map((h) => known.get(h) ?? node.block<NodeBlock>(h)));
  return { status, blocks };
}

export function ExplorerHome(_props: { route: Route }) {
  const node = useExplorerClient();
  const [state, setState] = useState<{ data?: Snapshot; error?: unknown }>({});
  const latest = useRef<NodeBlock[] | null>(null);
  useEffect(() => {
    let live = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const tick = async () => {
      try {
        const data = await snapshot(node, latest.current);
        latest.current = data.blocks;
        if (live) setState({ data });
      } catch (error) {
        if (live) setState((old) => ({ data: old.data, error }));
      }
      if (live) timer = setTimeout(tick, REFRESH_MS);
    };
    void tick();
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [node]);
  const { data, error } = state;
  return (
    <Page title="Ledger explorer" intro="Every block of the ledger the consortium's members run together: what was written, by whom, and whether it succeeded. Records themselves stay encrypted; the ledger holds their hashes.">
      <ExplorerNav current="blocks" />
      {error ? <ErrorMessage error={error} title="Could not refresh" /> : null}
      {data ? <StatusLine status={data.status} /> : !error ? <Loading what="Asking the node" /> : null}
      <JumpTo />
      {data && data.blocks === null ? <SignInNeeded what="blocks and transactions" /> : null}
      {data?.blocks ? <LatestBlocks blocks={data.blocks} /> : null}
    </Page>
  );
}

function StatusLine(props: { status: NodeStatus }) {
  const { status } = props;
  return (
    <p class="status-line" aria-live="off">
      <span>
        <strong>Chain</strong>
        <span class="mono">{status.chain_id}</span>
      </span>
      <span>
        <strong>Height</strong>
        <span data-testid="chain-height">{status.height}</span>
      </span>
      <span>
        <strong>Consensus</strong>
        {status.consensus === "cometbft" ? "CometBFT (several validators)" : "Single node (solo)"}
      </span>
      {typeof status.latest_block_time === "string" ? (
        <span>
          <strong>Last block</strong>
          {formatTime(status.latest_block_time)}
        </span>
      ) : null}
      <span class="refreshing">Updates every few seconds.</span>
    </p>
  );
}

/** Go to a block by height or a transaction by hash. */
function JumpTo() {
  const [text, setText] = useState("");
  const [problem, setProblem] = useState<string | undefined>();
  const go = (event: Event) => {
    event.preventDefault();
    const value = text.trim();
    if (/^[0-9]{1,15}$/.test(value) && Number(value) > 0) navigate(`/explorer/block?height=${Number(value)}`);
    else if (/^[0-9a-fA-F]{64}$/.test(value)) navigate(`/explorer/tx?hash=${value.toLowerCase()}`);
    else setProblem("Type a block height (a number) or a transaction hash (64 hexadecimal characters).");
  };
  return (
    <form class="jump" onSubmit={go}>
      <Field id="jump" label="Block height or transaction hash" error={problem}>
        <input
          id="jump"
          value={text}
          onInput={(e) => {
            setText((e.target as HTMLInputElement).value);
            setProblem(undefined);
          }}
          aria-invalid={problem ? true : undefined}
          aria-describedby={problem ? "jump-error" : undefined}
          autocomplete="off"
          spellcheck={false}
        />
      </Field>
      <button type="submit">Go</button>
    </form>
  );
}

function LatestBlocks(props: { blocks: NodeBlock[] }) {
  if (props.blocks.length === 0) return <Empty>The ledger has no blocks yet.</Empty>;
  return (
    <>
      <h2>Latest blocks</h2>
      <ScrollTable label="Latest blocks" testid="latest-blocks" columns={["Height", "Time", "Transactions", "Hash"]}>
        {props.blocks.map((block) => (
          <tr key={block.header.height} data-testid="block-row">
            <td>
              <a href={`#/explorer/block?height=${block.header.height}`}>{block.header.height}</a>
            </td>
            <td>{formatTime(block.header.time)}</td>
            <td>{block.header.num_txs}</td>
            <td>
              <Hash value={block.hash} />
            </td>
          </tr>
        ))}
      </ScrollTable>
    </>
  );
}
