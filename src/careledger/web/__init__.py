"""The portal's server side: the built pages (portal/, TypeScript) served with a strict
Content-Security-Policy. Everything the pages do, they do against the node API and the FHIR
gateway from the browser, with the keys in the page: this layer serves files, nothing else."""
