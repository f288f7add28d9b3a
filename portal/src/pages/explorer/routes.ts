import type { PageDef } from "../../app/routes";

export const explorerPages: PageDef[] = [];
