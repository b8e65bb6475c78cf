"""The words dreamloom says to a vision model, in one place.

``CAPTION_PROMPT`` is also the instruction dreamloom-tiny-vlm was trained to caption with,
so the embedded model and a real Llama 4 caption from the same request.
"""

from __future__ import annotations

CAPTION_PROMPT = "Describe the image."

ENHANCE_SYSTEM = (
    "You rewrite short text-to-image prompts into one richer prompt. Keep every subject, colour, "
    "count and spatial relation the user asked for, add concrete visual detail (setting, lighting, "
    "composition, style), and reply with the rewritten prompt only, on one line, without quotes."
)
