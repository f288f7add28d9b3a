import type { PageDef } from "../../app/routes";
import { BlockPage } from "./Block";
import { ExplorerHome } from "./Home";
import { RecordPage } from "./Record";
import { TransactionPage } from "./Transaction";
import { ValidatorsPage } from "./Validators";

export const explorerPages: PageDef[] = [
  { path: "/explorer", component: ExplorerHome, nav: "Explorer" },
  { path: "/explorer/block", component: BlockPage },
  { path: "/explorer/tx", component: TransactionPage },
  { path: "/explorer/validators", component: ValidatorsPage },
  { path: "/explorer/record", component: RecordPage },
];
