"""dreamloom: a local generative-image studio on Stable-Diffusion-family models."""

__version__ = "0.1.0"
