// Wallets kept on this device: the key file JSON encrypted under the patient's passphrase, in
// IndexedDB. The passphrase goes through PBKDF2-SHA256 (600,000 iterations, random 16-byte
// salt) into a non-extractable WebCrypto AES-256-GCM key; a random 12-byte nonce per save.
// The did and display name stay in clear (the start page lists stored wallets by them) and
// are bound to the ciphertext as its additional data, so a record whose name or did was
// changed does not open. Nothing here leaves the page.

export const KDF_NAME = "PBKDF2-SHA256";
export const PBKDF2_ITERATIONS = 600_000;
const MIN_ITERATIONS = 600_000; // a stored record asking for fewer is refused (cheaper guesses)
const MAX_ITERATIONS = 10_000_000; // nor one that would hang the page
const SALT_BYTES = 16;
const NONCE_BYTES = 12;
const STORE_VERSION = 1;

const DB_NAME = "careledger";
const DB_VERSION = 1;
const STORE = "wallets";

/** A wallet as stored: did and name in clear, the key file sealed. */
export interface StoredWallet {
  version: number;
  did: string;
  name: string;
  kdf: { name: string; iterations: number; salt: string };
  nonce: string;
  ciphertext: string;
  saved_at: string;
}

/** What the start page lists. */
export interface WalletSummary {
  did: string;
  name: string;
  savedAt: string;
}

export class WrongPassphrase extends Error {
  override name = "WrongPassphrase";
  constructor() {
    super("Wrong passphrase. Check it and try again (it is case-sensitive).");
  }
}

export class KeystoreError extends Error {
  override name = "KeystoreError";
}

export const MIN_PASSPHRASE_LENGTH = 8;

/** A sentence if the two passphrases cannot be used, else null. */
export function passphraseProblem(passphrase: string, repeated: string): string | null {
  if (passphrase.length < MIN_PASSPHRASE_LENGTH) {
    return `Choose a passphrase of at least ${MIN_PASSPHRASE_LENGTH} characters.`;
  }
  if (passphrase !== repeated) return "The two passphrases are not the same. Type them again.";
  return null;
}

// --- the cryptography (no IndexedDB: testable in Node) ----------------------------------

/** Encrypt `keyFileJson` for `did` under `passphrase`. */
export async function sealWallet(
  did: string,
  name: string,
  keyFileJson: string,
  passphrase: string,
  iterations = PBKDF2_ITERATIONS,
): Promise<StoredWallet> {
  const salt = crypto.getRandomValues(new Uint8Array(SALT_BYTES));
  const nonce = crypto.getRandomValues(new Uint8Array(NONCE_BYTES));
  const header = { version: STORE_VERSION, did, name, kdf: { name: KDF_NAME, iterations, salt: toB64(salt) }, nonce: toB64(nonce) };
  checkKdf(header.kdf);
  const key = await passphraseKey(passphrase, salt, iterations);
  const sealed = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv: nonce, additionalData: associatedData(header) },
    key,
    new TextEncoder().encode(keyFileJson),
  );
  return { ...header, ciphertext: toB64(new Uint8Array(sealed)), saved_at: new Date().toISOString() };
}

/** The key file JSON of a stored wallet; WrongPassphrase if `passphrase` does not open it. */
export async function openWallet(stored: StoredWallet, passphrase: string): Promise<string> {
  checkShape(stored);
  const salt = fromB64(stored.kdf.salt);
  const key = await passphraseKey(passphrase, salt, stored.kdf.iterations);
  let plain: ArrayBuffer;
  try {
    plain = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: fromB64(stored.nonce), additionalData: associatedData(stored) },
      key,
      fromB64(stored.ciphertext),
    );
  } catch {
    // AES-GCM cannot tell a wrong passphrase from an altered record; a wrong passphrase is
    // by far the likelier, and neither opens anything.
    throw new WrongPassphrase();
  }
  return new TextDecoder().decode(plain);
}

async function passphraseKey(passphrase: string, salt: Uint8Array<ArrayBuffer>, iterations: number): Promise<CryptoKey> {
  const material = await crypto.subtle.importKey("raw", new TextEncoder().encode(passphrase.normalize("NFC")), "PBKDF2", false, [
    "deriveKey",
  ]);
  return crypto.subtle.deriveKey(
    { name: "PBKDF2", hash: "SHA-256", salt, iterations },
    material,
    { name: "AES-GCM", length: 256 },
    false, // non-extractable: not even this page's code can read the key's bytes
    ["encrypt", "decrypt"],
  );
}

/** The clear fields, in a fixed order, as the ciphertext's additional data. */
function associatedData(header: Pick<StoredWallet, "version" | "did" | "name" | "kdf" | "nonce">): Uint8Array<ArrayBuffer> {
  const fields = [
    "careledger-wallet-v1",
    String(header.version),
    header.did,
    header.name,
    header.kdf.name,
    String(header.kdf.iterations),
    header.kdf.salt,
    header.nonce,
  ];
  return new TextEncoder().encode(JSON.stringify(fields));
}

function checkKdf(kdf: StoredWallet["kdf"]): void {
  if (kdf.name !== KDF_NAME || !Number.isSafeInteger(kdf.iterations)) {
    throw new KeystoreError("This stored wallet uses an unknown key derivation.");
  }
  if (kdf.iterations < MIN_ITERATIONS || kdf.iterations > MAX_ITERATIONS) {
    throw new KeystoreError(`This stored wallet's key derivation is outside ${MIN_ITERATIONS} to ${MAX_ITERATIONS} iterations.`);
  }
}

function checkShape(stored: StoredWallet): void {
  const ok =
    stored &&
    stored.version === STORE_VERSION &&
    typeof stored.did === "string" &&
    typeof stored.name === "string" &&
    typeof stored.nonce === "string" &&
    typeof stored.ciphertext === "string" &&
    stored.kdf &&
    typeof stored.kdf.salt === "string";
  if (!ok) throw new KeystoreError("This stored wallet is damaged: it cannot be opened. Forget it and restore your identity.");
  checkKdf(stored.kdf);
}

function toB64(bytes: Uint8Array): string {
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text);
}

function fromB64(text: string): Uint8Array<ArrayBuffer> {
  try {
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  } catch {
    throw new KeystoreError("This stored wallet is damaged: it cannot be opened. Forget it and restore your identity.");
  }
}

// --- IndexedDB ----------------------------------------------------------------------------

function openDb(): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    if (typeof indexedDB === "undefined") {
      reject(new KeystoreError("This browser cannot store wallets (no IndexedDB)."));
      return;
    }
    const request = indexedDB.open(DB_NAME, DB_VERSION);
    request.onupgradeneeded = () => {
      if (!request.result.objectStoreNames.contains(STORE)) {
        request.result.createObjectStore(STORE, { keyPath: "did" });
      }
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(new KeystoreError("This browser refused to open its wallet storage (private mode?)."));
    request.onblocked = () => reject(new KeystoreError("The wallet storage is busy in another tab; close it and try again."));
  });
}

async function withStore<T>(mode: IDBTransactionMode, act: (store: IDBObjectStore) => IDBRequest<T>): Promise<T> {
  const db = await openDb();
  try {
    return await new Promise<T>((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const request = act(tx.objectStore(STORE));
      let result: T;
      request.onsuccess = () => {
        result = request.result;
      };
      tx.oncomplete = () => resolve(result); // durable once the transaction completes
      tx.onerror = () => reject(new KeystoreError("The wallet storage failed: the change was not saved."));
      tx.onabort = () => reject(new KeystoreError("The wallet storage failed: the change was not saved (storage full?)."));
    });
  } finally {
    db.close();
  }
}

/** Keep a wallet on this device (one per did: a newer save replaces the older one). */
export async function saveWallet(stored: StoredWallet): Promise<void> {
  await withStore("readwrite", (store) => store.put(stored));
}

export async function loadWallet(did: string): Promise<StoredWallet | null> {
  const found = await withStore<StoredWallet | undefined>("readonly", (store) => store.get(did));
  return found ?? null;
}

export async function listWallets(): Promise<WalletSummary[]> {
  const all = await withStore<StoredWallet[]>("readonly", (store) => store.getAll());
  return all
    .map((w) => ({ did: w.did, name: w.name, savedAt: w.saved_at }))
    .sort((a, b) => a.name.localeCompare(b.name) || a.did.localeCompare(b.did));
}

/** Delete the wallet of `did` from this device (its keys stay wherever else they are kept). */
export async function forgetWallet(did: string): Promise<void> {
  await withStore("readwrite", (store) => store.delete(did));
}

/** Encrypt and keep; the key file JSON is in memory only for the call. */
export async function storeKeyFile(did: string, name: string, keyFileJson: string, passphrase: string): Promise<void> {
  await saveWallet(await sealWallet(did, name, keyFileJson, passphrase));
}

/** The key file JSON of the stored wallet of `did`, opened with `passphrase`. */
export async function unlockKeyFile(did: string, passphrase: string): Promise<string> {
  const stored = await loadWallet(did);
  if (!stored) throw new KeystoreError("No wallet of this identity is stored on this device.");
  return openWallet(stored, passphrase);
}
