// @vitest-environment happy-dom
// The router and the session hook subscribe from an effect, which Preact runs after the next
// paint, not with the render: whatever changed in between (a hash change at once after the
// page loaded; a sign-in) fired no listener of theirs. The hooks read the value again once
// they listen; without that the page stayed on its first route (the portal tests' reload
// race: a reload, then at once "#/patient/start", and the start page never came).
//
// The test holds Preact's after-paint effects (options.requestAnimationFrame) and runs them
// when it says the browser painted, so "between the render and the effects" is exact here.
import { h, options, render } from "preact";
import { setupRerender } from "preact/test-utils";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { useRoute } from "../src/app/router";
import { setSession, useSession } from "../src/app/session";
import type { PatientWallet } from "../src/wallet/patient";

let root: HTMLElement;
let painted: (() => void)[] = [];
const rerender = setupRerender();
const browserPaint = options.requestAnimationFrame;

beforeEach(async () => {
  options.requestAnimationFrame = (flushEffects) => void painted.push(flushEffects);
  window.location.hash = "";
  await events();
  root = document.createElement("div");
  document.body.appendChild(root);
});

afterEach(() => {
  render(null, root);
  root.remove();
  setSession({ kind: "none" });
  paint();
  painted = [];
  options.requestAnimationFrame = browserPaint;
});

/** The browser paints: Preact runs the effects it held, then the renders they asked for. */
function paint(): void {
  for (const flush of painted.splice(0)) flush();
  rerender();
}

/** Until the page's queued events (hashchange) have been dispatched. */
async function events(): Promise<void> {
  await (window as unknown as { happyDOM: { waitUntilComplete(): Promise<void> } }).happyDOM.waitUntilComplete();
}

function ShowRoute() {
  const route = useRoute();
  return h("p", null, `${route.path}?${route.params.toString()}`);
}

function ShowSession() {
  return h("p", null, useSession().kind);
}

describe("useRoute", () => {
  it("follows a hash change made after the first render and before its effects ran", async () => {
    window.location.hash = "#/patient/timeline"; // the page is (re)loaded on the timeline
    await events();
    render(h(ShowRoute, null), root);
    expect(root.textContent).toBe("/patient/timeline?");
    window.location.hash = "#/patient/start"; // and at once the start page is asked for
    await events(); // its hashchange is dispatched: nobody listens yet
    paint();
    expect(root.textContent).toBe("/patient/start?");
  });

  it("follows hash changes once mounted, with the query as params", async () => {
    render(h(ShowRoute, null), root);
    paint();
    expect(root.textContent).toBe("/?");
    window.location.hash = "#/explorer/block?height=7";
    await events();
    rerender();
    expect(root.textContent).toBe("/explorer/block?height=7");
  });

  it("gives the same Route while the hash is the same (pages' effects on it do not re-run)", async () => {
    const seen: unknown[] = [];
    function Record() {
      seen.push(useRoute());
      return null;
    }
    window.location.hash = "#/explorer";
    await events();
    render(h(Record, null), root);
    paint();
    render(h(Record, null), root); // a re-render by the parent
    expect(seen.length).toBe(2);
    expect(seen[1]).toBe(seen[0]);
  });
});

describe("useSession", () => {
  it("shows a sign-in made after the first render and before its effects ran", () => {
    render(h(ShowSession, null), root);
    expect(root.textContent).toBe("none");
    setSession({ kind: "patient", wallet: { did: "did:key:zPatient" } as unknown as PatientWallet });
    paint();
    expect(root.textContent).toBe("patient");
  });
});
