import type { PageDef } from "../../app/routes";
import { PatientPage } from "./Patient";
import { Patients } from "./Patients";
import { SignIn } from "./SignIn";

export const practitionerPages: PageDef[] = [
  { path: "/practitioner/sign-in", component: SignIn },
  { path: "/practitioner/patients", component: Patients, nav: "Patients" },
  { path: "/practitioner/patient", component: PatientPage },
];
