"""dreamloom: a local generative-image studio on Stable-Diffusion-family models."""

__version__ = "0.1.0"

import logging as _logging

# transformers announces, on every import of diffusers' pipelines, that its image processors
# fall back from torchvision to PIL. The PIL versions are the same computation, and the CPU
# PyTorch builds dreamloom installs cannot use torchvision, so the notice is only noise.
_logging.getLogger("transformers.utils.import_utils").addFilter(
    lambda record: "requires torchvision (not installed)" not in record.getMessage()
)
