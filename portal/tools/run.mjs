// Run a TypeScript tool of the portal with Node, offline: Vite's module runner transforms it
// (and what it imports) the way the build does. Usage: node tools/run.mjs tools/x.ts [args...]
// The tool exports `main(args: string[]): Promise<void>`.
import { resolve } from "node:path";
import { runnerImport } from "vite";

const [script, ...args] = process.argv.slice(2);
if (!script) {
  console.error("usage: node tools/run.mjs tools/<tool>.ts [args...]");
  process.exit(2);
}
const root = resolve(import.meta.dirname, "..");
const { module } = await runnerImport(resolve(process.cwd(), script), {
  root,
  configFile: false,
  logLevel: "error",
  server: { ws: false },
});
await module.main(args);
