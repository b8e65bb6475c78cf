"""The service layer: the one place every front end (CLI, HTTP APIs, web UI) calls.

It knows who is asking (``principals``), what they may ask (``policy``: limits and name
resolution by trust), whose jobs are whose (``studio``), and which settings are the
operator's alone (``preferences``). Its refusals are domain errors (``errors``) that each
front end translates once: an HTTP status, a Gradio message, a CLI exit code.
"""
