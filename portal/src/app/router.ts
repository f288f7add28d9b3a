// Hash routing: every page is `#/path?query`, so the server serves one index.html and a
// reload or a shared link lands on the same page without server-side routes.
import { useEffect, useState } from "preact/hooks";

export interface Route {
  path: string; // e.g. "/patient/timeline"
  params: URLSearchParams;
}

export function currentRoute(): Route {
  const hash = window.location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?", 2) as [string, string | undefined];
  return { path: path || "/", params: new URLSearchParams(query ?? "") };
}

export function navigate(path: string): void {
  window.location.hash = path;
}

export function useRoute(): Route {
  const [route, setRoute] = useState(currentRoute);
  useEffect(() => {
    const onChange = () => setRoute(currentRoute());
    window.addEventListener("hashchange", onChange);
    return () => window.removeEventListener("hashchange", onChange);
  }, []);
  return route;
}
