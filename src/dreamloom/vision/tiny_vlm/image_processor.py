"""Images for the tiny model without torchvision, and the ``Llama4Processor`` around them.

transformers' ``Llama4ImageProcessor`` needs torchvision, which this project cannot use
(its wheel does not match the CPU torch). The tiny model sees one 64x64 tile per image,
so its processor only resizes, rescales and normalizes (as Llama 4 does, mean = std = 0.5)
and reports every image as one tile (aspect ratio 1x1); ``Llama4Processor`` then writes
``<|image_start|><|image|><|patch|>...<|image_end|>`` with one ``<|patch|>`` per image feature.
"""

from __future__ import annotations

from typing import ClassVar

from transformers import BatchFeature, Llama4Processor, PreTrainedTokenizerBase
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import PILImageResampling

from dreamloom.vision.tiny_vlm.tokenizer import CHAT_TEMPLATE


class TinyLlama4ImageProcessor(PilBackend):
    """Resize to ``size`` (bicubic), scale to [-1, 1]; returns ``pixel_values`` and ``aspect_ratios``."""

    model_input_names: ClassVar[list[str]] = ["pixel_values", "aspect_ratios"]
    resample = PILImageResampling.BICUBIC
    image_mean = (0.5, 0.5, 0.5)
    image_std = (0.5, 0.5, 0.5)
    size: ClassVar[dict[str, int]] = {"height": 64, "width": 64}
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True

    def _preprocess(self, images, **kwargs) -> BatchFeature:
        features = super()._preprocess(images, **kwargs)
        features["aspect_ratios"] = [[1, 1] for _ in images]  # one tile each: no tile separators
        features.convert_to_tensors(kwargs.get("return_tensors"))
        return features


def tiny_processor(tokenizer: PreTrainedTokenizerBase, image_size: int, patch_size: int,
                   pixel_shuffle_ratio: float) -> Llama4Processor:
    """transformers' own ``Llama4Processor`` over the tiny image processor and ``tokenizer``."""
    image_processor = TinyLlama4ImageProcessor(size={"height": image_size, "width": image_size})
    return Llama4Processor(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
                           pixel_shuffle_ratio=pixel_shuffle_ratio,
                           chat_template=tokenizer.chat_template or CHAT_TEMPLATE)
