import type { PageDef } from "../../app/routes";
import { MyData } from "./MyData";
import { Start } from "./Start";
import { Timeline } from "./Timeline";

export const patientPages: PageDef[] = [
  { path: "/patient/start", component: Start },
  { path: "/patient/timeline", component: Timeline, nav: "Timeline" },
  { path: "/patient/data", component: MyData, nav: "My data" },
];
