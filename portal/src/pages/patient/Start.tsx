// The patient's start page: unlock a wallet kept on this device, or get keys into the page
// (create an identity, restore it from its phrase, open a key file, claim a clinic's
// package). Every key, phrase and code stays in the page (wallet/onboarding.ts).
import { useRef, useState } from "preact/hooks";
import { useSession } from "../../app/session";
import { ErrorMessage, Loading, Page, useAsync } from "../../app/ui";
import { listWallets } from "../../wallet/keystore";
import { ClaimFlow } from "./start/Claim";
import { TIMELINE } from "./start/common";
import { CreateFlow } from "./start/Create";
import { KeyFileFlow } from "./start/KeyFile";
import { RestoreFlow } from "./start/Restore";
import { UnlockView } from "./start/Unlock";
import "./start.css";

export function Start() {
  const session = useSession();
  const stored = useAsync(listWallets, []);
  const [showOnboarding, setShowOnboarding] = useState(false);
  if (session.kind === "patient") {
    return (
      <Page title="You are signed in">
        <p>
          You are signed in as <strong>{session.wallet.name || "a patient"}</strong>. <a href={`#${TIMELINE}`}>Go to your timeline</a>.
        </p>
      </Page>
    );
  }
  if (stored.loading) {
    return (
      <Page title="Your health records">
        <Loading what="Looking for wallets on this device" />
      </Page>
    );
  }
  const wallets = stored.value ?? [];
  if (wallets.length > 0 && !showOnboarding) {
    return <UnlockView wallets={wallets} onOther={() => setShowOnboarding(true)} onForgotten={stored.reload} />;
  }
  return (
    <Page
      title="Your health records"
      intro="Your keys are made and kept in this browser, encrypted under your passphrase. CareLedger's servers never see them."
    >
      {stored.error ? <ErrorMessage error={stored.error} title="Wallets on this device" /> : null}
      {wallets.length > 0 ? (
        <p>
          <button type="button" class="link-button inline" onClick={() => setShowOnboarding(false)}>
            Back to the wallets on this device
          </button>
        </p>
      ) : null}
      <Onboarding />
    </Page>
  );
}

// --- the four ways in ------------------------------------------------------------------------

const TABS = [
  { id: "create", label: "Create a new identity" },
  { id: "restore", label: "Restore from recovery phrase" },
  { id: "claim", label: "Claim my records" },
  { id: "keyfile", label: "Open a key file" },
] as const;
type TabId = (typeof TABS)[number]["id"];

function Onboarding() {
  const [tab, setTab] = useState<TabId>("create");
  // After a claim the new phrase is on screen and exists nowhere else: no leaving it by a tab.
  const [locked, setLocked] = useState(false);
  const refs = useRef<Record<string, HTMLButtonElement | null>>({});

  function onKey(event: KeyboardEvent, index: number) {
    const step = event.key === "ArrowRight" ? 1 : event.key === "ArrowLeft" ? -1 : 0;
    if ((!step && event.key !== "Home" && event.key !== "End") || locked) return;
    event.preventDefault();
    const next =
      event.key === "Home" ? 0 : event.key === "End" ? TABS.length - 1 : (index + step + TABS.length) % TABS.length;
    const id = TABS[next]!.id;
    setTab(id);
    refs.current[id]?.focus();
  }

  return (
    <>
      <div class="tabs" role="tablist" aria-label="How to start">
        {TABS.map((t, index) => (
          <button
            key={t.id}
            ref={(el) => {
              refs.current[t.id] = el;
            }}
            type="button"
            role="tab"
            id={`tab-${t.id}`}
            aria-selected={tab === t.id}
            aria-controls={`panel-${t.id}`}
            tabIndex={tab === t.id ? 0 : -1}
            disabled={locked && tab !== t.id}
            class={tab === t.id ? "tab tab-selected" : "tab"}
            onClick={() => setTab(t.id)}
            onKeyDown={(e) => onKey(e, index)}
          >
            {t.label}
          </button>
        ))}
      </div>
      <div class="card tab-panel" role="tabpanel" id={`panel-${tab}`} tabIndex={0}>
        {tab === "create" ? <CreateFlow /> : null}
        {tab === "restore" ? <RestoreFlow /> : null}
        {tab === "claim" ? <ClaimFlow onClaimed={() => setLocked(true)} /> : null}
        {tab === "keyfile" ? <KeyFileFlow /> : null}
      </div>
    </>
  );
}
