"""The tiny model's folder: a standard transformers Llama 4 folder plus a marker file.

``from_pretrained`` reads everything in it except the image processor (a class transformers
does not know), so the folder carries ``dreamloom.json`` saying how to build that in code;
``dreamloom.vision.processor.load_processor`` reads it.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from transformers import GenerationConfig, Llama4ForConditionalGeneration, Llama4Processor, PreTrainedTokenizerBase

from dreamloom.vision.tiny_vlm.tokenizer import EOS, EOT

EMBEDDED_VLM = "dreamloom-tiny-vlm"
MARKER = "dreamloom.json"


def embedded_vlm_path() -> Path:
    """The folder of the model shipped inside the package."""
    return Path(str(resources.files("dreamloom") / "assets" / EMBEDDED_VLM))


def read_marker(folder: Path | str) -> dict | None:
    """The marker of a dreamloom tiny-VLM folder, or None for any other path or hub id."""
    path = Path(folder) / MARKER
    return json.loads(path.read_text()) if path.is_file() else None


def generation_config(tokenizer: PreTrainedTokenizerBase) -> GenerationConfig:
    """Greedy decoding that stops at the end of the assistant's turn (or of the text)."""
    return GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False, max_new_tokens=32,
        eos_token_id=[tokenizer.convert_tokens_to_ids(EOT), tokenizer.convert_tokens_to_ids(EOS)],
    )


def write_model_folder(model: Llama4ForConditionalGeneration, processor: Llama4Processor, folder: Path) -> Path:
    """Write weights (safetensors), config, generation config, tokenizer with its chat
    template, and the marker with the image processor's settings."""
    tokenizer = processor.tokenizer
    model.generation_config = generation_config(tokenizer)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    vision = model.config.vision_config
    marker = {
        "model": EMBEDDED_VLM,
        "processor": {"image_size": vision.image_size, "patch_size": vision.patch_size,
                      "pixel_shuffle_ratio": vision.pixel_shuffle_ratio},
    }
    (folder / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return folder
