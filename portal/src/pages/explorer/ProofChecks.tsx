// A proof's checks as a list, each passed or failed by name, with a summary line.
import type { Check } from "../../wallet/proof-checks";

export function ProofChecks(props: { checks: Check[]; ok: boolean; trustedBy?: string | undefined; note?: string | undefined }) {
  return (
    <div data-testid="proof-result" data-valid={props.ok ? "true" : "false"}>
      <p class={`alert ${props.ok ? "alert-success" : "alert-error"}`} role={props.ok ? "status" : "alert"}>
        <span data-testid="proof">{props.ok ? "Proof valid" : "Proof invalid"}</span>
        {props.ok && props.trustedBy ? `: ${props.trustedBy}` : null}
        {!props.ok ? `: ${props.checks.find((c) => !c.ok)?.detail ?? ""}` : null}
      </p>
      <ul class="checks" aria-label="Checks of the proof">
        {props.checks.map((check) => (
          <li key={check.id} data-testid="proof-check" data-check={check.id} data-ok={check.ok ? "true" : "false"}>
            <span class={check.ok ? "mark-ok" : "mark-bad"} aria-hidden="true">
              {check.ok ? "✓" : "✗"}
            </span>
            <span>
              <span class="visually-hidden">{check.ok ? "Passed: " : "Failed: "}</span>
              {check.label}
              {check.detail ? <span class="detail"> — {check.detail}</span> : null}
            </span>
          </li>
        ))}
      </ul>
      {props.note ? <p class="hint">{props.note}</p> : null}
    </div>
  );
}
