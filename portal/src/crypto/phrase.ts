// Recovery phrases (port of crypto/keys.py new_recovery_phrase / identity_from_phrase):
// 24 BIP-39 English words (256 bits); master = HKDF(BIP-39 seed with an empty passphrase,
// label "careledger/v1/master-from-phrase").
import { generateMnemonic, mnemonicToSeed, mnemonicToSeedSync, validateMnemonic } from "@scure/bip39";
import { wordlist } from "@scure/bip39/wordlists/english.js";
import { Identity, deriveSecret } from "./identity";

export const PHRASE_WORDS = 24;
const MASTER_LABEL = "careledger/v1/master-from-phrase";

export class PhraseError extends Error {
  override name = "PhraseError";
}

export function newRecoveryPhrase(): string {
  return generateMnemonic(wordlist, 256);
}

/** The phrase as Python reads it: lower case, words separated by one space; PhraseError when
 * it has not 24 words, or a word is not in the list or the checksum is wrong. */
export function normalisePhrase(phrase: string): string {
  const words = phrase.toLowerCase().split(/\s+/).filter((w) => w.length > 0);
  if (words.length !== PHRASE_WORDS) {
    throw new PhraseError(`a recovery phrase has ${PHRASE_WORDS} words; this one has ${words.length}`);
  }
  const normalised = words.join(" ");
  if (!validateMnemonic(normalised, wordlist)) {
    throw new PhraseError("recovery phrase has an unknown word or a wrong checksum");
  }
  return normalised;
}

export function masterFromPhrase(phrase: string): Uint8Array {
  return deriveSecret(mnemonicToSeedSync(normalisePhrase(phrase)), MASTER_LABEL);
}

/** As masterFromPhrase, without blocking the page for PBKDF2's 2,048 rounds. */
export async function masterFromPhraseAsync(phrase: string): Promise<Uint8Array> {
  return deriveSecret(await mnemonicToSeed(normalisePhrase(phrase)), MASTER_LABEL);
}

export function identityFromPhrase(phrase: string): Identity {
  return Identity.fromMaster(masterFromPhrase(phrase));
}

/** Whether a single word is in the BIP-39 English list (for a "Word N" check field). */
export function isPhraseWord(word: string): boolean {
  return wordlist.includes(word.trim().toLowerCase());
}

export { wordlist as PHRASE_WORDLIST };
