"""Turn prompts (with attention syntax) into the embeddings a diffusers pipeline takes.

SD 1.x/2.x: one CLIP encoder; AUTOMATIC1111's clip skip N takes the N-th hidden state
from the end through the final layer norm. SDXL: both encoders' penultimate states side by
side, plus the second encoder's pooled projection, as the SDXL paper conditions on.
"""

from __future__ import annotations

import torch

from dreamloom.generate.prompt_weights import apply_weights, weighted_token_windows


def _pad_windows(a: list, b: list, tokenizer) -> None:
    """Give positive and negative prompts the same number of windows (empty ones added)."""
    empty_ids, empty_weights = weighted_token_windows(tokenizer, "")
    for windows in (a, b):
        while len(windows[0]) < max(len(a[0]), len(b[0])):
            windows[0].append(empty_ids[0])
            windows[1].append(empty_weights[0])


def _encode(encoder, ids: list[list[int]], weights: list[list[float]], layer: int, final_norm: bool):
    device = encoder.device
    input_ids = torch.tensor(ids, device=device)
    out = encoder(input_ids, output_hidden_states=True)
    hidden = out.hidden_states[layer]
    if final_norm:
        # transformers 5 dropped the ``text_model`` wrapper that 4.x had
        hidden = getattr(encoder, "text_model", encoder).final_layer_norm(hidden)
    hidden = apply_weights(hidden, torch.tensor(weights, device=device))
    return hidden.reshape(1, -1, hidden.shape[-1]), out


@torch.no_grad()
def encode_prompt_pair(pipeline, prompt: str, negative_prompt: str, clip_skip: int = 1) -> dict[str, torch.Tensor]:
    """Embeddings of one prompt and its negative, as keyword arguments for ``pipeline``."""
    if clip_skip < 1:
        raise ValueError("clip_skip must be at least 1 (1 = the last layer)")
    encoders = [e for e in (pipeline.text_encoder, getattr(pipeline, "text_encoder_2", None)) if e is not None]
    tokenizers = [t for t in (pipeline.tokenizer, getattr(pipeline, "tokenizer_2", None)) if t is not None]
    is_xl = len(encoders) == 2
    results: dict[str, list[torch.Tensor]] = {"prompt": [], "negative": []}
    pooled: dict[str, torch.Tensor] = {}
    for encoder, tokenizer in zip(encoders, tokenizers):
        if clip_skip > encoder.config.num_hidden_layers:
            raise ValueError(f"clip_skip {clip_skip} is deeper than the text encoder "
                             f"({encoder.config.num_hidden_layers} layers)")
        pos = list(weighted_token_windows(tokenizer, prompt))
        neg = list(weighted_token_windows(tokenizer, negative_prompt))
        _pad_windows(pos, neg, tokenizer)
        for key, (ids, weights) in (("prompt", pos), ("negative", neg)):
            layer = -(clip_skip + 1) if is_xl else -clip_skip
            hidden, out = _encode(encoder, ids, weights, layer, final_norm=not is_xl)
            results[key].append(hidden)
            if is_xl and encoder is encoders[-1]:
                pooled[key] = out.text_embeds[:1]
    kwargs = {
        "prompt_embeds": torch.cat(results["prompt"], dim=-1),
        "negative_prompt_embeds": torch.cat(results["negative"], dim=-1),
    }
    if is_xl:
        kwargs["pooled_prompt_embeds"] = pooled["prompt"]
        kwargs["negative_pooled_prompt_embeds"] = pooled["negative"]
    return kwargs
