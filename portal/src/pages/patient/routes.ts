import type { PageDef } from "../../app/routes";
import { AccessLog } from "./AccessLog";
import { Sharing } from "./Sharing";

export const patientPages: PageDef[] = [
  { path: "/patient/sharing", component: Sharing, nav: "Sharing" },
  { path: "/patient/log", component: AccessLog, nav: "Access log" },
];
