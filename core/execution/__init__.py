"""Two-leg execution: the write-ahead journal, the executors, recovery and reconciliation."""
