// Hash routing: every page is `#/path?query`, so the server serves one index.html and a
// reload or a shared link lands on the same page without server-side routes.
import { useEffect, useMemo, useState } from "preact/hooks";

export interface Route {
  path: string; // e.g. "/patient/timeline"
  params: URLSearchParams;
}

/** The route of a location hash ("#/path?query", "" for the home page). */
export function routeOf(hash: string): Route {
  const bare = hash.replace(/^#/, "") || "/";
  const [path, query] = bare.split("?", 2) as [string, string | undefined];
  return { path: path || "/", params: new URLSearchParams(query ?? "") };
}

export function navigate(path: string): void {
  window.location.hash = path;
}

/** The route of the current hash, kept up to date. */
export function useRoute(): Route {
  const [hash, setHash] = useState(() => window.location.hash);
  useEffect(() => {
    const onChange = () => setHash(window.location.hash);
    window.addEventListener("hashchange", onChange);
    // Preact runs effects after the next paint, not with the render: a hash change in
    // between (a link followed, or a test's navigation, at once after the page loaded) fired
    // its hashchange before this listener existed, and the page stayed on the route of the
    // first render. Read the hash again now that we listen (no re-render when unchanged).
    onChange();
    return () => window.removeEventListener("hashchange", onChange);
  }, []);
  // One Route per hash: pages that depend on `route` or its params re-run nothing on a
  // re-render of the same hash.
  return useMemo(() => routeOf(hash), [hash]);
}
