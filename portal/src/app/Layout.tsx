import type { ComponentChildren } from "preact";
import type { PageDef } from "./routes";
import { signOut, useSession } from "./session";
import { navigate } from "./router";

function who(session: ReturnType<typeof useSession>): string | null {
  if (session.kind === "patient") return session.wallet.name || "Patient";
  if (session.kind === "practitioner") return session.practitioner.displayName;
  return null;
}

export function Layout(props: { nav: PageDef[]; path: string; children: ComponentChildren }) {
  const session = useSession();
  const name = who(session);
  return (
    <>
      {/* The hash is the router's: following "#main" would route to a page "main" (not
          found), so the link moves the focus itself. */}
      <a
        class="skip-link"
        href="#main"
        onClick={(event) => {
          event.preventDefault();
          document.getElementById("main")?.focus();
        }}
      >
        Skip to content
      </a>
      <header class="topbar">
        <a class="brand" href="#/">
          CareLedger
        </a>
        <nav aria-label="Main">
          <ul>
            {props.nav.map((page) => (
              <li key={page.path}>
                <a href={`#${page.path}`} aria-current={props.path === page.path ? "page" : undefined}>
                  {page.nav}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        {name ? (
          <div class="account">
            <span class="account-name">{name}</span>
            <button
              type="button"
              class="link-button"
              onClick={() => {
                signOut();
                navigate("/");
              }}
            >
              Sign out
            </button>
          </div>
        ) : null}
      </header>
      <main id="main" tabIndex={-1}>
        {props.children}
      </main>
    </>
  );
}
