"""``perpcarry dashboard``: a small web app over the journal and the ledger (docs/dashboard.md)."""
