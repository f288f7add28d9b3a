"""A real consortium: one organisation's node on its own machine (`careledger node`), the
genesis ceremony and membership (`careledger consortium`). docs/operations.md is the guide."""
