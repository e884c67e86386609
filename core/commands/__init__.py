"""CLI commands that are more than a few lines; registered in perpcarry.cli."""
