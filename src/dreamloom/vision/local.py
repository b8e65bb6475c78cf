"""A vision-language model run here through transformers: dreamloom-tiny-vlm, or any
image-text-to-text checkpoint (Llama 4 Scout/Maverick, ...) by folder or hub id.

Decoding is greedy unless a temperature is given, so captions and answers are repeatable;
streaming runs ``generate`` in a thread feeding transformers' ``TextIteratorStreamer``.
One lock serialises generation: a model's forward pass is not safe to share between
threads, and on one device two at once are no faster than one after the other.
"""

from __future__ import annotations

import copy
import re
import threading
from pathlib import Path

import torch
from transformers import BatchFeature, PreTrainedModel, TextIteratorStreamer

from dreamloom.models.device import pick_device, pick_dtype
from dreamloom.models.loading import quiet_loading
from dreamloom.vision.backends import Completion, GenerationOptions, TokenStream, VisionBackend
from dreamloom.vision.messages import Message, to_template
from dreamloom.vision.processor import load_processor  # also repairs Llama 4's forward on transformers 5.24
from dreamloom.vision.prompts import CAPTION_PROMPT

_LEADING_PUNCTUATION = re.compile(r"^[,.;:!?]")


class LocalBackend(VisionBackend):
    """``model`` (an image-text-to-text ``PreTrainedModel``) with its ``processor`` (tokenizer,
    image processor and chat template in one, as transformers' processors are)."""

    def __init__(self, model: PreTrainedModel, processor, name: str = "local", options: GenerationOptions | None = None):
        self.model = model.eval()
        self.processor = processor
        self.name = name
        self.options = options or GenerationOptions()
        self._lock = threading.Lock()

    @classmethod
    def load(cls, location: str | Path, name: str | None = None, device: str | None = None, dtype: str | None = None,
             options: GenerationOptions | None = None) -> LocalBackend:
        """Load a checkpoint folder (or hub id) on the best device at a dtype safe there; weights
        from ``.safetensors`` only. On CUDA the weights are spread over every visible GPU (and the
        CPU when they do not fit) by accelerate's ``device_map="auto"``, which is how Llama 4
        Scout and Maverick fit on a multi-GPU host."""
        from transformers import AutoModelForImageTextToText

        chosen = pick_device(device)
        spread = {"device_map": "auto"} if chosen.type == "cuda" else {}
        with quiet_loading():
            model = AutoModelForImageTextToText.from_pretrained(
                str(location), dtype=pick_dtype(chosen, dtype), use_safetensors=True, **spread)
        if not spread:
            model = model.to(chosen)
        return cls(model, load_processor(location), name or str(location), options)

    def _inputs(self, messages: list[Message], prefill: str = "") -> BatchFeature:
        """Token ids (and pixels) of ``messages`` through the processor's chat template (a
        turn's one image before its text, as the model was trained: ``to_template``), the
        assistant's turn opened and started with ``prefill``."""
        template, images = to_template(messages)
        text = self.processor.apply_chat_template(template, add_generation_prompt=True, tokenize=False) + prefill
        inputs = self.processor(text=text, images=images or None, return_tensors="pt", add_special_tokens=False)
        inputs = inputs.to(self.model.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return inputs

    def _generate(self, inputs: BatchFeature, options: GenerationOptions, streamer=None) -> torch.Tensor:
        """The new token ids (batch of one) for ``inputs``."""
        config = copy.deepcopy(self.model.generation_config)
        if options.temperature > 0:
            config.update(max_new_tokens=options.max_new_tokens, do_sample=True, temperature=options.temperature)
        else:  # greedy: the checkpoint's sampling settings do not apply
            config.update(max_new_tokens=options.max_new_tokens, do_sample=False, temperature=None, top_p=None,
                          top_k=None)
        with self._lock, torch.inference_mode():
            new = self.model.generate(**inputs, generation_config=config, streamer=streamer)
        return new[:, inputs["input_ids"].shape[1]:]

    def _completion(self, inputs: BatchFeature, new: torch.Tensor, options: GenerationOptions, text: str) -> Completion:
        ids = new[0].tolist()
        stops = self.model.generation_config.eos_token_id
        stops = set(stops if isinstance(stops, list) else [stops])
        cut = len(ids) >= options.max_new_tokens and (not ids or ids[-1] not in stops)
        return self._answered(Completion(text, inputs["input_ids"].shape[1], len(ids), "length" if cut else "stop"))

    def _decode(self, new: torch.Tensor) -> str:
        return self.processor.tokenizer.decode(new[0], skip_special_tokens=True).strip()

    def complete(self, messages: list[Message], options: GenerationOptions | None = None) -> Completion:
        options = options or self.options
        inputs = self._inputs(messages)
        new = self._generate(inputs, options)
        return self._completion(inputs, new, options, self._decode(new))

    def stream(self, messages: list[Message], options: GenerationOptions | None = None) -> TokenStream:
        options = options or self.options
        inputs = self._inputs(messages)
        streamer = TextIteratorStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        outcome: dict = {}

        def run() -> None:
            try:
                outcome["new"] = self._generate(inputs, options, streamer)
            except BaseException as error:  # reported to the reader, who would otherwise wait forever
                outcome["error"] = error
                streamer.end()

        thread = threading.Thread(target=run, name="dreamloom-vision-stream", daemon=True)
        thread.start()

        def finish(text: str) -> Completion:
            thread.join()
            if "error" in outcome:
                raise outcome["error"]
            return self._completion(inputs, outcome["new"], options, text.strip())

        return TokenStream(iter(streamer), finish)

    def enhance(self, prompt: str) -> str:
        """``prompt`` continued as the model's own description of an image: the caption turn is
        opened with the prompt already written and the model writes on (no image is shown).

        Unlike the instruction of the base class this needs no instruction-following: a model
        trained only to caption (dreamloom-tiny-vlm, trained on ShapeWorld captions) completes
        the description in the words of the captions it learned, and an instruct model
        (Llama 4 Scout) adds detail in the same way. What is already complete stays as it is."""
        if not prompt or not prompt.strip():
            raise ValueError("the prompt to enhance is empty")
        prompt = prompt.strip()
        inputs = self._inputs([Message("user", [CAPTION_PROMPT])], prefill=prompt)
        continuation = self._decode(self._generate(inputs, self.options))
        if not continuation:
            return prompt
        return prompt + ("" if _LEADING_PUNCTUATION.match(continuation) else " ") + continuation
