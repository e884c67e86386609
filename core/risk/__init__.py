"""Risk controls of the running loop: the margin monitor (:mod:`perpcarry.risk.monitor`),
the circuit breaker and ``flatten`` (:mod:`perpcarry.risk.breaker`), and the kill switch and
breaker state kept in the journal (:mod:`perpcarry.risk.state`). See docs/risk.md."""
