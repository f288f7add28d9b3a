import type { PageDef } from "../../app/routes";
import { Start } from "./Start";

export const patientPages: PageDef[] = [{ path: "/patient/start", component: Start }];
