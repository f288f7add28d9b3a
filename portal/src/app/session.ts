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

export function signOut(): void {
  setSession({ kind: "none" });
}

export function useSession(): Session {
  const [session, setLocal] = useState(current);
  useEffect(() => {
    listeners.add(setLocal);
    return () => void listeners.delete(setLocal);
  }, []);
  return session;
}
