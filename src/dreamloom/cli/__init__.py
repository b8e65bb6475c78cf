"""The command line: a thin typer front end over the engine."""

import os

# Library chatter (e.g. "requires torchvision") is not the user's business on a terminal;
# set before transformers and diffusers are first imported.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
