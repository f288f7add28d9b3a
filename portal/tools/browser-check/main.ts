// The interop commands in a real browser, under the portal's Content-Security-Policy
// (tests/portal/test_crypto_interop.py builds this page with Vite and serves it with
// web/app.py's portal_app). It reads /assets/input.json ({command: input, ...}), runs each
// command, and writes {command: output or {"error": ...}} into #result.
import { COMMANDS, type Json } from "../interop-commands";

async function run(): Promise<Json> {
  const input = (await (await fetch("/assets/input.json")).json()) as Json;
  const output: Json = {};
  for (const [command, payload] of Object.entries(input)) {
    const started = performance.now();
    try {
      output[command] = await COMMANDS[command]!(payload as Json);
    } catch (e) {
      output[command] = { error: `${(e as Error).name}: ${(e as Error).message}` };
    }
    output[command].ms = Math.round(performance.now() - started);
  }
  return output;
}

const target = document.getElementById("result")!;
run().then(
  (output) => {
    target.textContent = JSON.stringify(output);
    target.dataset.done = "true";
  },
  (e: unknown) => {
    target.textContent = JSON.stringify({ error: String(e) });
    target.dataset.done = "true";
  },
);
