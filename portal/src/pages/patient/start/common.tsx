// What the ways in to the start page share: the new passphrase's fields, reading a small
// file the patient picks, the end of each form, and finishing (keep the keys, sign in, go to the timeline).
import type { ComponentChildren } from "preact";
import { useState } from "preact/hooks";
import { UserError } from "../../../app/errors";
import { navigate } from "../../../app/router";
import { ErrorMessage, Field, Loading } from "../../../app/ui";
import { passphraseProblem } from "../../../wallet/keystore";
import { keepOnDevice, startSession, type PatientKeys } from "../../../wallet/onboarding";
import type { NodeClient } from "../../../wallet/node";

export const TIMELINE = "/patient/timeline";
const MAX_FILE_BYTES = 64 * 1024;

/** Both passphrase fields; `error` shows under the second. */
function PassphraseFields(props: {
  prefix: string;
  value: [string, string];
  onChange: (value: [string, string]) => void;
  error?: string | undefined;
}) {
  const [first, second] = props.value;
  return (
    <>
      <Field
        id={`${props.prefix}-passphrase`}
        label="Passphrase"
        hint="At least 8 characters. It unlocks your keys on this device; nobody can reset it for you."
      >
        <input
          id={`${props.prefix}-passphrase`}
          type="password"
          autoComplete="new-password"
          aria-describedby={`${props.prefix}-passphrase-hint`}
          value={first}
          onInput={(e) => props.onChange([e.currentTarget.value, second])}
        />
      </Field>
      <Field id={`${props.prefix}-repeat`} label="Repeat passphrase" error={props.error}>
        <input
          id={`${props.prefix}-repeat`}
          type="password"
          autoComplete="new-password"
          aria-invalid={props.error ? true : undefined}
          aria-describedby={props.error ? `${props.prefix}-repeat-error` : undefined}
          value={second}
          onInput={(e) => props.onChange([first, e.currentTarget.value])}
        />
      </Field>
    </>
  );
}

/** A new passphrase typed twice: `fields` to show, `check()` to call on submit (it shows
 * the problem under the fields and says whether the passphrase can be used). */
export function useNewPassphrase(prefix: string) {
  const [value, setValue] = useState<[string, string]>(["", ""]);
  const [mismatch, setMismatch] = useState<string | undefined>();
  function check(): boolean {
    const problem = passphraseProblem(...value);
    setMismatch(problem ?? undefined);
    return !problem;
  }
  return {
    passphrase: value[0],
    check,
    fields: <PassphraseFields prefix={prefix} value={value} onChange={setValue} error={mismatch} />,
  };
}

export async function readSmallFile(input: HTMLInputElement | null, what: string): Promise<string> {
  const file = input?.files?.[0];
  if (!file) throw new UserError(`Choose the ${what} file.`);
  if (file.size > MAX_FILE_BYTES) throw new UserError(`This file is too large to be a ${what} (${Math.ceil(file.size / 1024)} KiB).`);
  return file.text();
}

/** Keep the keys on this device, sign in, and go to the timeline. */
export async function finish(keys: PatientKeys, passphrase: string, node?: NodeClient): Promise<void> {
  await keepOnDevice(keys, passphrase);
  startSession(keys, node);
  navigate(TIMELINE);
}

/** The end of a form: its error, what it is busy with, and its submit button (disabled while
 * busy) before any `children` buttons. */
export function FormEnd(props: { error: unknown; busy: string | null; submit: string; children?: ComponentChildren }) {
  return (
    <>
      {props.error ? <ErrorMessage error={props.error} /> : null}
      {props.busy ? <Loading what={props.busy} /> : null}
      <div class="actions">
        <button type="submit" disabled={!!props.busy}>
          {props.submit}
        </button>
        {props.children}
      </div>
    </>
  );
}
