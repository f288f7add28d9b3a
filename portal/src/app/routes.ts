import type { ComponentType } from "preact";
import type { Route } from "./router";

/** A page: `path` is matched exactly, or as a prefix when it ends with "/*" (the rest is in
 * `route.path`). `nav` puts it in the area's navigation. */
export interface PageDef {
  path: string;
  component: ComponentType<{ route: Route }>;
  nav?: string;
}

export function matchPage(pages: PageDef[], path: string): PageDef | undefined {
  return (
    pages.find((page) => page.path === path) ??
    pages.find((page) => page.path.endsWith("/*") && path.startsWith(page.path.slice(0, -1)))
  );
}
