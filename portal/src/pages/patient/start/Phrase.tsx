// The recovery phrase, shown once and checked against what the patient wrote down.
import type { ComponentChildren } from "preact";
import { useState } from "preact/hooks";
import { Field, Notice } from "../../../app/ui";
import { FormEnd } from "./common";
import { pickCheckPositions, wrongWords } from "../../../wallet/onboarding";

export function PhraseStep(props: {
  phrase: string;
  onChecked: () => void;
  busy: string | null;
  error: unknown;
  before?: ComponentChildren;
}) {
  const [checking, setChecking] = useState(false);
  const [positions] = useState(() => pickCheckPositions());
  const [answers, setAnswers] = useState<Record<number, string>>({});
  const [wrong, setWrong] = useState<number[]>([]);
  const words = props.phrase.split(" ");

  function confirm(event: Event) {
    event.preventDefault();
    const filled = Object.fromEntries(positions.map((p) => [p, answers[p] ?? ""]));
    const bad = wrongWords(props.phrase, filled);
    setWrong(bad);
    if (bad.length === 0) props.onChecked();
  }

  if (!checking) {
    return (
      <div>
        <h2>Your recovery phrase</h2>
        {props.before}
        <Notice kind="warning">
          Write these 24 words on paper, in order, and keep them somewhere safe. They are shown only once. Anyone who has them can
          act as you; nobody, not even your clinic, can give them back to you.
        </Notice>
        <ol class="phrase" data-testid="recovery-phrase" aria-label="Your 24 words, in order">
          {words.flatMap((word, i) => [i > 0 ? " " : null, <li key={i}>{word}</li>])}
        </ol>
        <div class="actions">
          <button type="button" onClick={() => setChecking(true)}>
            I have written it down
          </button>
        </div>
      </div>
    );
  }
  return (
    <form onSubmit={confirm} noValidate>
      <h2>Check your recovery phrase</h2>
      <p>Type these words from what you wrote down, to make sure it is right.</p>
      {positions.map((p) => (
        <Field key={p} id={`word-${p}`} label={`Word ${p}`} error={wrong.includes(p) ? `Word ${p} is not right.` : undefined}>
          <input
            id={`word-${p}`}
            autoComplete="off"
            autoCapitalize="none"
            spellcheck={false}
            aria-invalid={wrong.includes(p) ? true : undefined}
            value={answers[p] ?? ""}
            onInput={(e) => setAnswers({ ...answers, [p]: e.currentTarget.value })}
          />
        </Field>
      ))}
      {wrong.length > 0 ? (
        <div class="alert alert-error" role="alert">
          {wrong.length === 1 ? `Word ${wrong[0]} does not match` : `Words ${wrong.join(", ")} do not match`} your recovery phrase.
          Check what you wrote down.
        </div>
      ) : null}
      <FormEnd error={props.error} busy={props.busy} submit="Confirm">
        <button type="button" class="secondary" onClick={() => setChecking(false)} disabled={!!props.busy}>
          Show the phrase again
        </button>
      </FormEnd>
    </form>
  );
}
