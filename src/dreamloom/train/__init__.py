"""Training: the recipes that build dreamloom's shipped models, and personalization."""
