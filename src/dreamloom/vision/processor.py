"""The processor of a Llama 4 model folder: dreamloom's tiny model or a real Scout/Maverick.

A real Llama 4 folder loads with ``AutoProcessor``. dreamloom's tiny model has an image
processor transformers cannot reload (it replaces ``Llama4ImageProcessor``, which needs
torchvision), so its folder carries a marker and its processor is built here in code.

Importing this module also runs ``repair_llama4_output``: whoever loads a Llama 4
processor runs the model next, and on transformers 5.24 its forward fails without it.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoProcessor, Llama4Processor, PreTrainedTokenizerFast, ProcessorMixin
from transformers.modeling_outputs import MoeCausalLMOutputWithPast

from dreamloom.vision.tiny_vlm.folder import read_marker
from dreamloom.vision.tiny_vlm.image_processor import tiny_processor


def repair_llama4_output() -> None:
    """Make ``Llama4ForConditionalGeneration.forward`` work on transformers 5.24: it reads
    ``image_outputs`` from its language model's output (``MoeCausalLMOutputWithPast``), which
    has no such field, so every forward and ``generate`` raised AttributeError. The output
    class gets the attribute, None; a transformers that fixes the bug never reads it."""
    if not hasattr(MoeCausalLMOutputWithPast, "image_outputs"):
        MoeCausalLMOutputWithPast.image_outputs = None


repair_llama4_output()


def load_processor(model_path: Path | str) -> Llama4Processor | ProcessorMixin:
    """The processor for ``model_path`` (a folder or hub id): built in code for a folder with
    dreamloom's marker, else ``AutoProcessor.from_pretrained(model_path)``."""
    marker = read_marker(model_path)
    if marker is None:
        return AutoProcessor.from_pretrained(model_path)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(model_path)
    return tiny_processor(tokenizer, **marker["processor"])
