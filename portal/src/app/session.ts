// Who is signed in, in this tab. Secrets live in memory only while the tab is open (and in
// IndexedDB encrypted under the passphrase: wallet/keystore.ts); nothing here is sent anywhere.
import { useEffect, useState } from "preact/hooks";
import type { PatientWallet } from "../wallet/patient";
import type { PractitionerSession } from "../wallet/practitioner";

export type Session =
  | { kind: "none" }
  | { kind: "patient"; wallet: PatientWallet }
  | { kind: "practitioner"; practitioner: PractitionerSession };

let current: Session = { kind: "none" };
const listeners = new Set<(session: Session) => void>();

export function getSession(): Session {
  return current;
}

export function setSession(session: Session): void {
  current = session;
  for (const listener of listeners) listener(session);
}

// What a page kept for the signed-in user outside the session (decrypted records read once
// per tab): dropped at sign-out, so that nothing read with the keys outlives them.
const signOutCleanups = new Set<() => void>();

/** Run `cleanup` at every sign-out (registered once, by the module that keeps the data). */
export function onSignOut(cleanup: () => void): void {
  signOutCleanups.add(cleanup);
}

export function signOut(): void {
  for (const cleanup of signOutCleanups) cleanup();
  setSession({ kind: "none" });
}

export function useSession(): Session {
  const [session, setLocal] = useState(current);
  useEffect(() => {
    listeners.add(setLocal);
    // Effects run after the next paint: a sign-in or sign-out since this component's first
    // render called no listener of ours. Take the session as it is now.
    setLocal(current);
    return () => void listeners.delete(setLocal);
  }, []);
  return session;
}
