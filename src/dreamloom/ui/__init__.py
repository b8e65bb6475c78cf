"""The web UI (Gradio), mounted by the server at ``/``; see ``dreamloom.ui.app``."""
