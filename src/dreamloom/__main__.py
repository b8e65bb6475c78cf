"""``python -m dreamloom`` runs the command line."""

from dreamloom.cli.main import app

app()
