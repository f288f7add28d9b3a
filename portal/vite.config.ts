// The portal is built into the Python package (src/careledger/web/static/), which
// `careledger up` serves at `/` with a strict Content-Security-Policy (web/app.py). The built
// files are not committed: `make run` and `make test` build them.
/// <reference types="vitest/config" />
import { defineConfig } from "vite";

export default defineConfig({
  base: "/",
  build: {
    outDir: "../src/careledger/web/static",
    emptyOutDir: true,
    // No inline script or style anywhere: the CSP allows 'self' only.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
    target: "es2022",
  },
  test: {
    include: ["tests/**/*.test.ts"],
    environment: "node",
    testTimeout: 60000,
  },
});
