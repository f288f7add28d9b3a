// HPKE (RFC 9180 base mode, single shot, empty AAD) as every key wrap of the scheme uses it
// (docs/crypto.md 6): DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM; the output is
// enc (32) || ciphertext || tag (16). @hpke/core does it with WebCrypto only (its X25519 is
// WebCrypto's "X25519": Node >= 20, Chromium >= 133, Firefox >= 130, Safari >= 17).
import { x25519 } from "@noble/curves/ed25519.js";
import { Aes256Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from "@hpke/core";
import { bufferOf, concat } from "./bytes";

export const ENC_SIZE = 32;
const suite = new CipherSuite({
  kem: new DhkemX25519HkdfSha256(),
  kdf: new HkdfSha256(),
  aead: new Aes256Gcm(),
});

export class HpkeError extends Error {
  override name = "HpkeError";
}

/** Seal to an X25519 public key. `ephemeralPrivate` pins the ephemeral key: for test vectors
 * only (docs/crypto.md 8); a fresh one is drawn otherwise. */
export async function hpkeSeal(
  recipientPublic: Uint8Array,
  info: Uint8Array,
  plaintext: Uint8Array,
  ephemeralPrivate?: Uint8Array,
): Promise<Uint8Array> {
  if (recipientPublic.length !== 32) throw new HpkeError("an X25519 public key is 32 bytes");
  const recipientPublicKey = await suite.kem.deserializePublicKey(bufferOf(recipientPublic));
  const ekm =
    ephemeralPrivate === undefined
      ? undefined
      : {
          privateKey: await suite.kem.deserializePrivateKey(bufferOf(ephemeralPrivate)),
          publicKey: await suite.kem.deserializePublicKey(bufferOf(x25519.getPublicKey(ephemeralPrivate))),
        };
  const sender = await suite.createSenderContext({
    recipientPublicKey,
    info: bufferOf(info),
    ...(ekm ? { ekm } : {}),
  });
  const sealed = await sender.seal(bufferOf(plaintext));
  return concat(new Uint8Array(sender.enc), new Uint8Array(sealed));
}

/** Open enc || ciphertext with an X25519 private key; HpkeError for any failure (wrong key,
 * wrong info, altered byte, small-order enc). */
export async function hpkeOpen(
  recipientPrivate: Uint8Array,
  info: Uint8Array,
  wrapped: Uint8Array,
): Promise<Uint8Array> {
  if (wrapped.length < ENC_SIZE + 16) throw new HpkeError("wrapped value too short");
  try {
    const recipientKey = await suite.kem.deserializePrivateKey(bufferOf(recipientPrivate));
    const opened = await suite.open(
      { recipientKey, enc: bufferOf(wrapped.subarray(0, ENC_SIZE)), info: bufferOf(info) },
      bufferOf(wrapped.subarray(ENC_SIZE)),
    );
    return new Uint8Array(opened);
  } catch (cause) {
    throw new HpkeError("HPKE open failed", { cause });
  }
}
