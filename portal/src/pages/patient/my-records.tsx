// The signed-in patient's records, read once per tab and shared by the Timeline, the chart and
// My data (reading a few thousand records costs seconds; the pages should not each pay it).
// Dropped when the patient signs out or erases records.
import { useEffect, useState } from "preact/hooks";
import { onSignOut } from "../../app/session";
import type { PatientWallet } from "../../wallet/patient";
import { readRecords, type ReadResult } from "../../wallet/records";

interface Loaded {
  did: string;
  result: Promise<ReadResult>;
  progress: { opened: number; total: number };
  listeners: Set<() => void>;
}

let loaded: Loaded | null = null;

function load(wallet: PatientWallet): Loaded {
  if (loaded && loaded.did === wallet.did) return loaded;
  const state: Loaded = { did: wallet.did, result: Promise.resolve({ records: [], failures: [] }), progress: { opened: 0, total: 0 }, listeners: new Set() };
  state.result = readRecords(wallet.node, wallet.did, wallet, undefined, {
    progress: (opened, total) => {
      state.progress = { opened, total };
      for (const listener of state.listeners) listener();
    },
  });
  // a failed read is not kept: the next visit tries again
  state.result.catch(() => {
    if (loaded === state) loaded = null;
  });
  loaded = state;
  return state;
}

/** Forget what was read (after an erase, to read again, or at sign-out). */
export function forgetRecords(): void {
  loaded = null;
}

// The decrypted records must not outlive the keys that opened them.
onSignOut(forgetRecords);

/** The records read for `wallet` in this tab, read now if they are not (exported for tests). */
export function myRecords(wallet: PatientWallet): Promise<ReadResult> {
  return load(wallet).result;
}

export interface RecordsState {
  result: ReadResult | undefined;
  error: unknown;
  loading: boolean;
  progress: { opened: number; total: number };
  reload: () => void;
}

export function useMyRecords(wallet: PatientWallet | null): RecordsState {
  const [generation, setGeneration] = useState(0);
  const [state, setState] = useState<Omit<RecordsState, "reload">>({
    result: undefined,
    error: undefined,
    loading: true,
    progress: { opened: 0, total: 0 },
  });
  useEffect(() => {
    if (!wallet) return;
    let live = true;
    const current = load(wallet);
    const onProgress = () => live && setState((old) => ({ ...old, progress: current.progress }));
    current.listeners.add(onProgress);
    setState({ result: undefined, error: undefined, loading: true, progress: current.progress });
    current.result.then(
      (result) => live && setState({ result, error: undefined, loading: false, progress: current.progress }),
      (error: unknown) => live && setState({ result: undefined, error, loading: false, progress: current.progress }),
    );
    return () => {
      live = false;
      current.listeners.delete(onProgress);
    };
  }, [wallet?.did, generation]);
  return {
    ...state,
    reload: () => {
      forgetRecords();
      setGeneration((g) => g + 1);
    },
  };
}

/** What a patient page shows when nobody is signed in as a patient. */
export function SignInFirst(props: { what: string }) {
  return (
    <div class="card sign-in-first">
      <p>Sign in as a patient to see {props.what}. Your keys stay in this browser: the page opens your records itself.</p>
      <p>
        <a class="button" href="#/patient/start">
          Sign in or create an identity
        </a>
      </p>
    </div>
  );
}
