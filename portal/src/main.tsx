import { render } from "preact";
import "./styles.css";
import { Layout } from "./app/Layout";
import { useRoute } from "./app/router";
import { matchPage, type PageDef } from "./app/routes";
import { useSession } from "./app/session";
import { Page } from "./app/ui";
import { Home } from "./pages/Home";
import { explorerPages } from "./pages/explorer/routes";
import { patientPages } from "./pages/patient/routes";
import { practitionerPages } from "./pages/practitioner/routes";

const pages: PageDef[] = [{ path: "/", component: Home }, ...patientPages, ...practitionerPages, ...explorerPages];

function NotFound() {
  return (
    <Page title="Page not found">
      <p>
        There is no such page. <a href="#/">Go to the start page</a>.
      </p>
    </Page>
  );
}

function navFor(kind: string): PageDef[] {
  const area = kind === "patient" ? patientPages : kind === "practitioner" ? practitionerPages : [];
  return [...area, ...explorerPages].filter((page) => page.nav);
}

function App() {
  const route = useRoute();
  const session = useSession();
  const page = matchPage(pages, route.path);
  const Component = page?.component ?? NotFound;
  return (
    <Layout nav={navFor(session.kind)} path={route.path}>
      <Component route={route} />
    </Layout>
  );
}

const root = document.getElementById("app");
if (root) {
  root.textContent = "";
  render(<App />, root);
}
