"""AUTOMATIC1111's prompt attention syntax and the weighted embeddings it produces.

``(word)`` multiplies attention by 1.1, ``[word]`` divides by 1.1, ``(word:1.3)`` sets it,
``\\(`` is a literal bracket. Weighted token embeddings are rescaled to the unweighted
mean, as AUTOMATIC1111's default emphasis does, and prompts longer than the text
encoder's window are split into windows whose embeddings are concatenated.
"""

from __future__ import annotations

import re

import torch

_TOKEN = re.compile(
    r"\\\(|\\\)|\\\[|\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|]|[^\\()\[\]:]+|:"
)
_UP, _DOWN = 1.1, 1 / 1.1


def parse_attention(text: str) -> list[tuple[str, float]]:
    """Split ``text`` into (chunk, weight) pairs; unbalanced brackets close at the end."""
    result: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for item in result[start:]:
            item[1] *= factor

    for match in _TOKEN.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            result.append([token[1:], 1.0])
        elif token == "(":
            round_open.append(len(result))
        elif token == "[":
            square_open.append(len(result))
        elif weight is not None and round_open:
            scale(round_open.pop(), float(weight))
        elif token == ")" and round_open:
            scale(round_open.pop(), _UP)
        elif token == "]" and square_open:
            scale(square_open.pop(), _DOWN)
        else:
            result.append([token, 1.0])
    for start in round_open:
        scale(start, _UP)
    for start in square_open:
        scale(start, _DOWN)
    merged: list[tuple[str, float]] = []
    for chunk, w in result:
        if merged and merged[-1][1] == w:
            merged[-1] = (merged[-1][0] + chunk, w)
        else:
            merged.append((chunk, w))
    return merged or [("", 1.0)]


def weighted_token_windows(tokenizer, text: str) -> tuple[list[list[int]], list[list[float]]]:
    """Token ids and per-token weights in windows of the tokenizer's length, with BOS/EOS/padding."""
    ids: list[int] = []
    weights: list[float] = []
    for chunk, weight in parse_attention(text):
        chunk_ids = tokenizer(chunk, add_special_tokens=False).input_ids
        ids += chunk_ids
        weights += [weight] * len(chunk_ids)
    body = tokenizer.model_max_length - 2
    windows_ids, windows_weights = [], []
    for start in range(0, max(len(ids), 1), body):
        window = ids[start : start + body]
        pad = body - len(window)
        windows_ids.append([tokenizer.bos_token_id, *window, tokenizer.eos_token_id] + [tokenizer.pad_token_id] * pad)
        windows_weights.append([1.0, *weights[start : start + body], 1.0] + [1.0] * pad)
    return windows_ids, windows_weights


def apply_weights(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Scale each token's embedding by its weight, then restore the original mean
    (skipped where there is nothing to weight, or the mean is too close to 0 to divide by)."""
    if bool((weights == 1).all()):
        return hidden
    weighted = hidden * weights[..., None].to(hidden.dtype)
    original_mean, new_mean = hidden.mean(), weighted.mean()
    if new_mean.abs() < 1e-6:
        return weighted
    return weighted * (original_mean / new_mean)
