"""Reusable test kit for venue plugins; see docs/writing-a-plugin.md."""
