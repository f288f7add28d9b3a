import type { PageDef } from "../../app/routes";

export const practitionerPages: PageDef[] = [];
