"""The funding ledger: funding payments from the venues into the journal per position
(:mod:`.sync`), and the PnL of each position and venue from the journal (:mod:`.pnl`)."""
