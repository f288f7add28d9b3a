// The three forms that add a record through the gateway: every field checked here first
// (forms.ts), each problem shown beside its field, and the gateway's refusal (a 422 names the
// field too) shown above the buttons.
import type { ComponentChildren } from "preact";
import { useState } from "preact/hooks";
import { ErrorMessage, Field } from "../../app/ui";
import type { GatewayClient } from "../../wallet/gateway";
import {
  type Built,
  buildCondition,
  buildMedicationRequest,
  buildObservation,
  CLINICAL_STATUSES,
  type FormErrors,
  OBSERVATION_CATEGORIES,
  todayOf,
} from "./forms";

interface FormProps {
  gateway: GatewayClient;
  patientId: string;
  onSaved: (what: string) => void;
  onCancel: () => void;
}

type Values = Record<string, string>;

function useForm(initial: Values) {
  const [values, setValues] = useState<Values>(initial);
  const [errors, setErrors] = useState<FormErrors>({});
  const [failure, setFailure] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const set = (name: string) => (event: Event) =>
    setValues((old) => ({ ...old, [name]: (event.currentTarget as HTMLInputElement).value }));
  return { values, errors, setErrors, failure, setFailure, busy, setBusy, set };
}

type FormState = ReturnType<typeof useForm>;

function FormShell(props: {
  title: string;
  submit: string;
  state: FormState;
  build: () => Built;
  saved: string;
  form: FormProps;
  children: ComponentChildren;
}) {
  const { state } = props;
  const onSubmit = async (event: Event) => {
    event.preventDefault();
    state.setFailure(null);
    const built = props.build();
    if (!built.ok) {
      state.setErrors(built.errors);
      const first = Object.keys(built.errors)[0];
      if (first) document.getElementById(`f-${first}`)?.focus();
      return;
    }
    state.setErrors({});
    state.setBusy(true);
    try {
      await props.form.gateway.create(built.resource);
      props.form.onSaved(props.saved);
    } catch (caught) {
      state.setFailure(caught);
    } finally {
      state.setBusy(false);
    }
  };
  return (
    <form class="panel" onSubmit={onSubmit} noValidate aria-labelledby="form-title">
      <h2 id="form-title">{props.title}</h2>
      <div class="form-grid">{props.children}</div>
      {state.failure ? <ErrorMessage error={state.failure} title="Not saved" /> : null}
      <div class="actions">
        <button type="submit" disabled={state.busy}>
          {state.busy ? "Saving…" : props.submit}
        </button>
        <button type="button" class="secondary" onClick={props.form.onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}

function Input(props: { state: FormState; name: string; label: string; hint?: string; type?: string; inputMode?: string; max?: string }) {
  const error = props.state.errors[props.name];
  const id = `f-${props.name}`;
  const described = [props.hint ? `${id}-hint` : "", error ? `${id}-error` : ""].filter(Boolean).join(" ");
  return (
    <Field id={id} label={props.label} hint={props.hint} error={error}>
      <input
        id={id}
        type={props.type ?? "text"}
        inputMode={props.inputMode as "decimal" | undefined}
        max={props.max}
        value={props.state.values[props.name] ?? ""}
        aria-invalid={error ? "true" : undefined}
        aria-describedby={described || undefined}
        onInput={props.state.set(props.name)}
      />
    </Field>
  );
}

function Select(props: { state: FormState; name: string; label: string; options: Record<string, string> }) {
  const error = props.state.errors[props.name];
  const id = `f-${props.name}`;
  return (
    <Field id={id} label={props.label} error={error}>
      <select id={id} value={props.state.values[props.name] ?? ""} onChange={props.state.set(props.name)} aria-invalid={error ? "true" : undefined}>
        {Object.entries(props.options).map(([value, label]) => (
          <option key={value} value={value}>
            {label}
          </option>
        ))}
      </select>
    </Field>
  );
}

export function ObservationForm(props: FormProps) {
  const today = todayOf(new Date());
  const state = useForm({ category: "vital-signs", code: "", display: "", value: "", unit: "", date: today });
  const v = state.values;
  const build = () =>
    buildObservation({ category: v.category!, code: v.code!, display: v.display!, value: v.value!, unit: v.unit!, date: v.date! }, props.patientId);
  return (
    <FormShell title="Add an observation" submit="Save observation" state={state} build={build} saved="Observation saved." form={props}>
      <Select state={state} name="category" label="Category" options={OBSERVATION_CATEGORIES} />
      <Input state={state} name="code" label="LOINC code" hint="For example 29463-7 (body weight), 8867-4 (heart rate)." />
      <Input state={state} name="display" label="What was measured" hint="For example Body weight." />
      <Input state={state} name="value" label="Value" inputMode="decimal" />
      <Input state={state} name="unit" label="Unit" hint="For example kg, /min, mmHg." />
      <Input state={state} name="date" label="Date measured" type="date" max={today} />
    </FormShell>
  );
}

export function ConditionForm(props: FormProps) {
  const today = todayOf(new Date());
  const state = useForm({ code: "", display: "", clinicalStatus: "active", onset: "" });
  const v = state.values;
  const build = () => buildCondition({ code: v.code!, display: v.display!, clinicalStatus: v.clinicalStatus!, onset: v.onset! }, props.patientId);
  return (
    <FormShell title="Add a condition" submit="Save condition" state={state} build={build} saved="Condition saved." form={props}>
      <Input state={state} name="code" label="SNOMED CT code" hint="For example 44054006 (diabetes mellitus type 2)." />
      <Input state={state} name="display" label="Condition" />
      <Select state={state} name="clinicalStatus" label="Clinical status" options={CLINICAL_STATUSES} />
      <Input state={state} name="onset" label="Onset date (optional)" type="date" max={today} />
    </FormShell>
  );
}

export function MedicationForm(props: FormProps) {
  const today = todayOf(new Date());
  const state = useForm({ code: "", display: "", dosage: "", authoredOn: today });
  const v = state.values;
  const build = () =>
    buildMedicationRequest({ code: v.code!, display: v.display!, dosage: v.dosage!, authoredOn: v.authoredOn! }, props.patientId);
  return (
    <FormShell title="Add a medication request" submit="Save medication request" state={state} build={build} saved="Medication request saved." form={props}>
      <Input state={state} name="code" label="RxNorm code" hint="For example 860975 (metformin 500 mg tablet)." />
      <Input state={state} name="display" label="Medication" />
      <Input state={state} name="dosage" label="Dosage instructions (optional)" hint="For example 1 tablet twice a day." />
      <Input state={state} name="authoredOn" label="Prescribed on" type="date" max={today} />
    </FormShell>
  );
}
