import type { PageDef } from "../../app/routes";

export const patientPages: PageDef[] = [];
