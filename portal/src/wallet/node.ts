// A client of the node HTTP API from the page (port of wallet/node_client.py,
// protocol/signing.py and node_client.Signer). Every request but GET /status is signed in the
// page (crypto/requestsig.ts) for this node's chain id and node id, read once from /status.
// Only public data and signatures leave the page: never a key, phrase or claim code.
import type { Identity } from "../crypto/identity";
import { authorizationHeader } from "../crypto/requestsig";
import { signTx } from "../crypto/tx";
import { b64 } from "../crypto/bytes";
import { MAX_FETCH, packFrames, unpackResults, type FetchResult } from "./frames";

export interface NodeStatus {
  chain_id: string;
  node_id: string;
  height: number;
  [key: string]: unknown;
}

/** The node's answer to a transaction it committed (POST /tx with wait). */
export interface TxResult {
  hash: string;
  code: number;
  log: string;
  height: number;
  events: unknown[];
}

/** The node (or the chain) refused a request. `code` is the machine-readable reason (the API's
 * error code, or the chain's code name for a refused transaction, e.g. "unauthorised");
 * `message` is a sentence for a person. */
export class NodeError extends Error {
  override name = "NodeError";
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** chain/codes.py: the chain's result codes, by number. */
export const CHAIN_CODES: Record<number, string> = {
  1: "malformed",
  2: "oversized",
  3: "wrong_chain",
  4: "unknown_type",
  5: "bad_signature",
  6: "replay",
  7: "invalid_payload",
  8: "unauthorised",
  9: "not_found",
  10: "conflict",
  11: "nonce_too_far",
  12: "erased",
  13: "unknown_sender",
  14: "no_consent",
  15: "bad_batch",
  16: "batch_replayed",
  17: "batch_gap",
  99: "internal",
};

const CHAIN_SENTENCES: Record<string, string> = {
  malformed: "The ledger could not read the transaction",
  oversized: "The transaction is too large",
  wrong_chain: "The transaction was made for another ledger",
  unknown_type: "The ledger does not know this kind of transaction",
  bad_signature: "The ledger could not verify the signature",
  replay: "The transaction was already sent (its number was used)",
  invalid_payload: "The ledger refused the transaction's content",
  unauthorised: "The ledger refused: you are not allowed to do this",
  not_found: "The ledger refused: something it refers to does not exist",
  conflict: "The ledger refused: it conflicts with what is already recorded",
  nonce_too_far: "The transaction's number is too far ahead",
  erased: "The record is erased",
  unknown_sender: "The ledger does not know this identity (it is not registered)",
  no_consent: "The patient has not allowed this",
  internal: "The ledger failed while processing the transaction",
};

/** A refused transaction as a NodeError whose message is a sentence ("... : <chain log>."). */
export function chainError(code: number, log: string): NodeError {
  const name = CHAIN_CODES[code] ?? `code_${code}`;
  const lead = CHAIN_SENTENCES[name] ?? `The ledger refused the transaction (code ${code})`;
  const detail = log.trim();
  const sentence = detail ? `${lead}: ${detail.replace(/\.$/, "")}.` : `${lead}.`;
  return new NodeError(422, name, sentence);
}

const HTTP_SENTENCES: Record<number, string> = {
  401: "The node did not accept this identity's signature",
  403: "The node refused access",
  404: "The node has no such thing",
  413: "The request is too large for the node",
  429: "The node is busy with this identity's requests; try again in a moment",
  502: "The node cannot be reached",
  503: "The node is busy or not ready; try again in a moment",
  504: "The node did not answer in time",
};

async function errorOf(response: Response): Promise<NodeError> {
  const text = await response.text().catch(() => "");
  try {
    const error = (JSON.parse(text) as { error: { code: string; message: string } }).error;
    if (typeof error.code === "string" && typeof error.message === "string") {
      return new NodeError(response.status, error.code, sentenceOf(error.message));
    }
  } catch {
    // not the API's error shape: describe the status instead
  }
  const lead = HTTP_SENTENCES[response.status] ?? `The node answered with an error (HTTP ${response.status})`;
  return new NodeError(response.status, "http_error", `${lead}.`);
}

function sentenceOf(message: string): string {
  const trimmed = message.trim();
  if (!trimmed) return "The node refused the request.";
  const first = trimmed[0]!.toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(first) ? first : `${first}.`;
}

/** The node cannot be reached at all (down, or the network is). */
export class NodeUnreachable extends NodeError {
  override name = "NodeUnreachable";
  constructor() {
    super(0, "unreachable", "The CareLedger node cannot be reached. Check your connection, or try again in a moment.");
  }
}

async function send(input: string, init: RequestInit): Promise<Response> {
  try {
    return await fetch(input, init);
  } catch {
    throw new NodeUnreachable();
  }
}

export class NodeClient {
  private statusOnce: Promise<NodeStatus> | null = null;
  private lastNonce: number | null = null;
  private nonceQueue: Promise<unknown> = Promise.resolve();

  /** `identity` null: an unsigned client (only /status answers). `did` defaults to the
   * identity's own did:key. `base` "" is the page's own origin. */
  constructor(
    readonly identity: Identity | null,
    did: string | null,
    readonly base = "",
  ) {
    this.did = did ?? identity?.did ?? null;
  }

  readonly did: string | null;

  /** A client of the same node (sharing its /status) that signs as another identity. */
  signedAs(identity: Identity, did?: string): NodeClient {
    const client = new NodeClient(identity, did ?? identity.did, this.base);
    client.statusOnce = this.statusOnce;
    return client;
  }

  /** Start this client's transaction numbering at `lastNonce` (a new identity registering
   * itself passes 0: an unregistered did may not ask `auth/nonce`). */
  setLastNonce(lastNonce: number): void {
    this.lastNonce = lastNonce;
  }

  /** GET /status (public, unsigned): fresh every call. */
  async status(): Promise<NodeStatus> {
    const response = await send(`${this.base}/status`, { method: "GET", cache: "no-store" });
    if (!response.ok) throw await errorOf(response);
    const status = (await response.json()) as NodeStatus;
    if (typeof status.chain_id !== "string" || typeof status.node_id !== "string") {
      throw new NodeError(502, "unknown_node", "The server did not say which ledger and node it is: not a CareLedger node?");
    }
    return status;
  }

  /** The node's chain id and node id, asked once (what requests are signed for). */
  audience(): Promise<NodeStatus> {
    if (!this.statusOnce) {
      this.statusOnce = this.status().catch((error: unknown) => {
        this.statusOnce = null; // a node that was down may come back: ask again next time
        throw error;
      });
    }
    return this.statusOnce;
  }

  /** A signed request; the Response whatever its status (the caller decides). `target` is a
   * path with an optional query, percent-encoded as it will be sent. */
  async signedFetch(method: string, target: string, body?: Uint8Array, contentType = "application/json"): Promise<Response> {
    if (!this.identity || !this.did) {
      throw new NodeError(401, "unauthenticated", "Sign in first: the node answers only signed requests.");
    }
    const { chain_id, node_id } = await this.audience();
    const sent = requestTarget(target);
    const payload = body ?? new Uint8Array(0);
    const authorization = authorizationHeader(
      this.identity,
      this.did,
      { chainId: chain_id, nodeId: node_id },
      method,
      sent,
      payload,
    );
    const headers: Record<string, string> = { authorization };
    const init: RequestInit = { method, headers, cache: "no-store" };
    if (body) {
      headers["content-type"] = contentType;
      init.body = body as BodyInit;
    }
    return send(`${this.base}${sent}`, init);
  }

  /** A signed GET of any route (e.g. "/blocks/3", "/audit/entries?first=1&count=2"): its JSON. */
  async get<T = unknown>(pathAndQuery: string): Promise<T> {
    return this.json<T>(await this.signedFetch("GET", pathAndQuery));
  }

  /** A signed POST of a JSON body: its JSON answer. */
  async post<T = unknown>(path: string, value: unknown): Promise<T> {
    const body = new TextEncoder().encode(JSON.stringify(value));
    return this.json<T>(await this.signedFetch("POST", path, body));
  }

  /** GET /query/{module}/{name}?params: the chain's answer (NodeError if it refuses). */
  async query<T = unknown>(module: string, name: string, params: Record<string, string> = {}): Promise<T> {
    const query = new URLSearchParams(params).toString();
    const path = `/query/${encodeURIComponent(module)}/${encodeURIComponent(name)}`;
    return this.get<T>(query ? `${path}?${query}` : path);
  }

  async block<T = unknown>(height: number): Promise<T> {
    return this.get<T>(`/blocks/${height}`);
  }

  async transaction<T = unknown>(hash: string): Promise<T> {
    return this.get<T>(`/txs/${encodeURIComponent(hash)}`);
  }

  /** The next transaction nonce for this did, as Python's Signer: the chain's last nonce
   * (`auth/nonce`) once, then counting up in this client. */
  async nextNonce(): Promise<number> {
    if (this.lastNonce === null) {
      const answer = await this.query<{ last_nonce: number }>("auth", "nonce", { did: this.requireDid() });
      // another caller may have set it while this one waited
      if (this.lastNonce === null) this.lastNonce = Number(answer.last_nonce);
    }
    this.lastNonce += 1;
    return this.lastNonce;
  }

  /** Forget the counted nonce: the next transaction asks the chain again (after a refusal
   * that may have left the count ahead of the chain). */
  resetNonce(): void {
    this.lastNonce = null;
  }

  /** Sign a transaction of `type` with the next nonce, POST /tx and wait for its block.
   * NodeError (code = the chain's code name, message a sentence) if the mempool or the block
   * refuses it. Transactions of one client are numbered and sent one after another. */
  submit(type: string, payload: Record<string, unknown>): Promise<TxResult> {
    const run = this.nonceQueue.then(() => this.submitNow(type, payload));
    this.nonceQueue = run.catch(() => undefined);
    return run;
  }

  private async submitNow(type: string, payload: Record<string, unknown>): Promise<TxResult> {
    if (!this.identity) throw new NodeError(401, "unauthenticated", "Sign in first: a transaction must be signed.");
    const { chain_id } = await this.audience();
    const nonce = await this.nextNonce();
    const wire = signTx(this.identity, { chainId: chain_id, type, sender: this.requireDid(), nonce, payload });
    try {
      return await this.submitRaw(wire);
    } catch (error) {
      // a refused transaction spent no nonce on the chain: count from the chain again
      this.resetNonce();
      throw error;
    }
  }

  /** Sign several transactions with consecutive nonces, POST /txs and wait for their blocks
   * (one request: they can share a block). NodeError for the first one refused; the ones
   * before it are committed. */
  submitMany(items: { type: string; payload: Record<string, unknown> }[]): Promise<TxResult[]> {
    const run = this.nonceQueue.then(() => this.submitManyNow(items));
    this.nonceQueue = run.catch(() => undefined);
    return run;
  }

  private async submitManyNow(items: { type: string; payload: Record<string, unknown> }[]): Promise<TxResult[]> {
    if (items.length === 0) return [];
    if (!this.identity) throw new NodeError(401, "unauthenticated", "Sign in first: a transaction must be signed.");
    const identity = this.identity;
    const { chain_id } = await this.audience();
    const sender = this.requireDid();
    const wires: Uint8Array[] = [];
    for (const { type, payload } of items) {
      const nonce = await this.nextNonce();
      wires.push(signTx(identity, { chainId: chain_id, type, sender, nonce, payload }));
    }
    try {
      const answer = await this.post<{ results: SubmitAnswer[] }>("/txs", { txs: wires.map((w) => b64(w)), wait: true });
      return answer.results.map(txResultOf);
    } catch (error) {
      this.resetNonce();
      throw error;
    }
  }

  /** POST /tx with already signed bytes, waiting for the block. */
  async submitRaw(wire: Uint8Array): Promise<TxResult> {
    const answer = await this.post<SubmitAnswer>("/tx", { tx: b64(wire), wait: true });
    return txResultOf(answer);
  }

  /** POST /blobs/fetch[?purpose=]: each hash's status and body (the blob, or the reason as
   * UTF-8), in a Map keyed by hash. Batches of at most 5,000 hashes. */
  async fetchBlobs(hashes: string[], purpose?: string): Promise<Map<string, FetchResult>> {
    const unique = [...new Set(hashes)];
    const found = new Map<string, FetchResult>();
    for (let start = 0; start < unique.length; start += MAX_FETCH) {
      const batch = unique.slice(start, start + MAX_FETCH);
      const target = purpose ? `/blobs/fetch?purpose=${encodeURIComponent(purpose)}` : "/blobs/fetch";
      const body = new TextEncoder().encode(JSON.stringify({ hashes: batch }));
      const response = await this.signedFetch("POST", target, body);
      if (!response.ok) throw await errorOf(response);
      const results = unpackResults(new Uint8Array(await response.arrayBuffer()));
      if (results.length !== batch.length) {
        throw new NodeError(502, "malformed", `The node answered ${results.length} blobs for ${batch.length} asked.`);
      }
      batch.forEach((hash, i) => found.set(hash, results[i]!));
    }
    return found;
  }

  /** POST /blobs (frames): upload blobs; their hashes, in order. */
  async uploadBlobs(blobs: Uint8Array[]): Promise<string[]> {
    const response = await this.signedFetch("POST", "/blobs", packFrames(blobs), "application/octet-stream");
    return (await this.json<{ hashes: string[] }>(response)).hashes;
  }

  private async json<T>(response: Response): Promise<T> {
    if (!response.ok) throw await errorOf(response);
    return (await response.json()) as T;
  }

  private requireDid(): string {
    if (!this.did) throw new NodeError(401, "unauthenticated", "Sign in first.");
    return this.did;
  }
}

interface SubmitAnswer {
  hash: string;
  check_code: number;
  check_log?: string;
  height: number | null;
  code: number | null;
  log?: string;
  events?: unknown[];
}

/** The mempool's or the block's refusal as a NodeError; a committed success as a TxResult. */
export function txResultOf(answer: SubmitAnswer): TxResult {
  if (answer.check_code) throw chainError(answer.check_code, answer.check_log ?? "");
  if (answer.code) throw chainError(answer.code, answer.log ?? "");
  if (answer.height === null || answer.height === undefined) {
    throw new NodeError(504, "not_committed", "The node accepted the transaction but did not say it was committed; check again in a moment.");
  }
  return { hash: answer.hash, code: 0, log: answer.log ?? "", height: answer.height, events: answer.events ?? [] };
}

/** The request target as the browser will send it (percent-encoded path and query), which is
 * what the node checks the signature against. */
export function requestTarget(pathAndQuery: string): string {
  const url = new URL(pathAndQuery, "http://careledger.invalid");
  return url.pathname + url.search;
}
