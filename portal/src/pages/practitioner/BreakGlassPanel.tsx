// Break the glass: emergency access to a patient who cannot consent, with a stated reason. The
// gateway records it on the ledger (the patient is alerted, with the reason) and reads the
// patient's emergency scopes for a limited time, shown here once granted.
import { useState } from "preact/hooks";
import { ErrorMessage, Field, Notice } from "../../app/ui";
import type { BreakGlass, GatewayClient } from "../../wallet/gateway";
import { reasonError } from "./forms";

const SCOPE_WORDS: Record<string, string> = {
  clinical: "conditions, allergies and procedures",
  medications: "medications",
  diagnostics: "lab results and measurements",
  sensitive: "sensitive records",
};

export function untilText(iso: string): string {
  const when = new Date(iso);
  if (Number.isNaN(when.getTime())) return iso;
  return when.toLocaleString(undefined, { dateStyle: "long", timeStyle: "short" });
}

export function BreakGlassPanel(props: { gateway: GatewayClient; patientId: string; onBroken: () => void }) {
  const [reason, setReason] = useState("");
  const [fieldError, setFieldError] = useState<string | undefined>();
  const [failure, setFailure] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const [glass, setGlass] = useState<BreakGlass | null>(null);
  const submit = async (event: Event) => {
    event.preventDefault();
    setFailure(null);
    const problem = reasonError(reason);
    setFieldError(problem ?? undefined);
    if (problem) {
      document.getElementById("break-glass-reason")?.focus();
      return;
    }
    setBusy(true);
    try {
      const broken = await props.gateway.breakGlass(props.patientId, reason.trim());
      setGlass(broken);
      props.onBroken();
    } catch (caught) {
      setFailure(caught);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="panel panel-emergency" onSubmit={submit} noValidate aria-labelledby="break-glass-title">
      <h2 id="break-glass-title">Emergency access</h2>
      <p class="hint">
        Only if the patient cannot consent and needs care now. Recorded on the ledger with your name and reason; the patient is alerted; ends
        after at most one hour.
      </p>
      {glass ? (
        <Notice kind="warning">
          <span data-testid="break-glass-until">
            Emergency access granted until <strong>{untilText(glass.until)}</strong>
          </span>{" "}
          to {glass.scopes.map((s) => SCOPE_WORDS[s] ?? s).join(", ")}. The records below now include them.
        </Notice>
      ) : null}
      <Field id="break-glass-reason" label="Reason" hint="Recorded and shown to the patient (at most 500 characters)." error={fieldError}>
        <textarea
          id="break-glass-reason"
          rows={2}
          maxLength={500}
          value={reason}
          aria-invalid={fieldError ? "true" : undefined}
          aria-describedby={`break-glass-reason-hint${fieldError ? " break-glass-reason-error" : ""}`}
          onInput={(event) => setReason((event.currentTarget as HTMLTextAreaElement).value)}
        />
      </Field>
      {failure ? <ErrorMessage error={failure} title="Emergency access refused" /> : null}
      <div class="actions">
        <button type="submit" class="danger" disabled={busy}>
          {busy ? "Breaking the glass…" : "Break the glass"}
        </button>
      </div>
    </form>
  );
}
