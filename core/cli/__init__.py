"""The ``perpcarry`` command line: the app, its shared helpers and one module per command."""
