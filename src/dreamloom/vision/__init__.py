"""Vision-language: models that look at images (captions, questions, prompt feedback)."""
