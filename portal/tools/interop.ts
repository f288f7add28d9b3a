// The page's crypto against Python's under Node.js: tests/portal/test_crypto_interop.py runs
// `node tools/run.mjs tools/interop.ts <command> <in.json> <out.json>` (commands in
// interop-commands.ts).
import { readFileSync, writeFileSync } from "node:fs";
import { COMMANDS } from "./interop-commands";

export async function main(args: string[]): Promise<void> {
  const [command, inPath, outPath] = args;
  const run = command ? COMMANDS[command] : undefined;
  if (!run || !inPath || !outPath) throw new Error(`usage: interop.ts {${Object.keys(COMMANDS).join("|")}} IN.json OUT.json`);
  const output = await run(JSON.parse(readFileSync(inPath, "utf8")));
  writeFileSync(outPath, JSON.stringify(output));
}
