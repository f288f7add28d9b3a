import { Page } from "../app/ui";

export function Home() {
  return (
    <Page
      title="Your health records, in your hands"
      intro="CareLedger keeps medical records encrypted, shared only with whom the patient chooses, and every access on a ledger the hospitals of the consortium run together."
    >
      <ul class="choices">
        <li>
          <a class="choice" href="#/patient/start">
            <strong>I am a patient</strong>
            <span>See your records, choose who may read them, and see every access.</span>
          </a>
        </li>
        <li>
          <a class="choice" href="#/practitioner/sign-in">
            <strong>I am a clinician</strong>
            <span>Find your patients, read their records with consent, add observations.</span>
          </a>
        </li>
        <li>
          <a class="choice" href="#/explorer">
            <strong>Explore the ledger</strong>
            <span>Blocks, transactions, validators, and the proof behind a record.</span>
          </a>
        </li>
      </ul>
    </Page>
  );
}
