import type { PageDef } from "../../app/routes";
import { MyData } from "./MyData";
import { Timeline } from "./Timeline";

export const patientPages: PageDef[] = [
  { path: "/patient/timeline", component: Timeline, nav: "Timeline" },
  { path: "/patient/data", component: MyData, nav: "My data" },
];
