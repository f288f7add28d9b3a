// The few building blocks every page uses, so that errors, loading and empty states look and
// read the same everywhere (and are announced to screen readers).
import type { ComponentChildren } from "preact";
import { useEffect, useState } from "preact/hooks";
import { describeError } from "./errors";

export function Page(props: { title: string; intro?: ComponentChildren; children: ComponentChildren }) {
  useEffect(() => {
    document.title = `${props.title} · CareLedger`;
  }, [props.title]);
  return (
    <section class="page" aria-labelledby="page-title">
      <h1 id="page-title">{props.title}</h1>
      {props.intro ? <p class="intro">{props.intro}</p> : null}
      {props.children}
    </section>
  );
}

export function ErrorMessage(props: { error: unknown; title?: string }) {
  return (
    <div class="alert alert-error" role="alert">
      {props.title ? <strong>{props.title}: </strong> : null}
      {describeError(props.error)}
    </div>
  );
}

export function Notice(props: { kind?: "info" | "success" | "warning"; children: ComponentChildren }) {
  const kind = props.kind ?? "info";
  return (
    <div class={`alert alert-${kind}`} role="status">
      {props.children}
    </div>
  );
}

export function Loading(props: { what: string }) {
  return (
    <p class="loading" role="status" aria-live="polite">
      <span class="spinner" aria-hidden="true" /> {props.what}…
    </p>
  );
}

export function Empty(props: { children: ComponentChildren }) {
  return <p class="empty">{props.children}</p>;
}

/** Runs `load` once (and again when `deps` change); renders loading, error or the result. */
export function useAsync<T>(load: () => Promise<T>, deps: unknown[]): {
  value: T | undefined;
  error: unknown;
  loading: boolean;
  reload: () => void;
} {
  const [state, setState] = useState<{ value?: T; error?: unknown; loading: boolean }>({ loading: true });
  const [generation, setGeneration] = useState(0);
  useEffect(() => {
    let live = true;
    setState((old) => ({ ...old, loading: true, error: undefined }));
    load().then(
      (value) => live && setState({ value, loading: false }),
      (error: unknown) => live && setState({ error, loading: false }),
    );
    return () => {
      live = false;
    };
  }, [...deps, generation]);
  return { value: state.value, error: state.error, loading: state.loading, reload: () => setGeneration((g) => g + 1) };
}

/** A labelled form field; the error is tied to the input for screen readers. */
export function Field(props: {
  id: string;
  label: string;
  hint?: string;
  error?: string | undefined;
  children: ComponentChildren;
}) {
  return (
    <div class={props.error ? "field field-invalid" : "field"}>
      <label for={props.id}>{props.label}</label>
      {props.hint ? (
        <p class="hint" id={`${props.id}-hint`}>
          {props.hint}
        </p>
      ) : null}
      {props.children}
      {props.error ? (
        <p class="field-error" id={`${props.id}-error`} role="alert">
          {props.error}
        </p>
      ) : null}
    </div>
  );
}
