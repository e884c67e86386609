"""Domain types, the exception hierarchy and the field readers: pure, no I/O."""
