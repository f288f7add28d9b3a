import type { PageDef } from "../../app/routes";
import { AccessLog } from "./AccessLog";
import { MyData } from "./MyData";
import { Sharing } from "./Sharing";
import { Start } from "./Start";
import { Timeline } from "./Timeline";

export const patientPages: PageDef[] = [
  { path: "/patient/start", component: Start },
  { path: "/patient/timeline", component: Timeline, nav: "Timeline" },
  { path: "/patient/sharing", component: Sharing, nav: "Sharing" },
  { path: "/patient/log", component: AccessLog, nav: "Access log" },
  { path: "/patient/data", component: MyData, nav: "My data" },
];
