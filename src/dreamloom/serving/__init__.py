"""What ``dreamloom serve`` runs (``app``) and how it is configured (``config``): the one place
the HTTP APIs and the web UI meet; neither front end imports the other. ``config`` is cheap to
import, so the command line derives its options from it without loading the server."""
