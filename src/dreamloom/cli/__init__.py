"""The command line: a thin typer front end over the engine."""
