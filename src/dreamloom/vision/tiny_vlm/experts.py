"""What a Llama 4 mixture of experts spends per token and where its router sends tokens.

A token runs the shared expert and only its top-k routed experts, so the parameters
active per token are the total less the routed experts it skips (Llama 4 Scout: 17 B of
109 B). The usage report counts, per MoE layer, the share of image tokens (``<|patch|>``
positions, fused early into the same stream) and of text tokens each expert receives.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import torch
from transformers import Llama4ForConditionalGeneration, ProcessorMixin

from dreamloom.shapeworld import render
from dreamloom.vision.tiny_vlm.data import user_turn
from dreamloom.vision.tiny_vlm.evaluate import held_out_questions

matplotlib.use("Agg")  # files only, as dreamloom.plots: safe in servers and worker threads

import matplotlib.pyplot as plt

MODALITIES = ("image", "text")


def _moe_layers(model: Llama4ForConditionalGeneration) -> dict[int, torch.nn.Module]:
    layers = model.language_model.model.layers
    return {i: layer.feed_forward for i, layer in enumerate(layers) if layer.is_moe_layer}


def parameter_counts(model: Llama4ForConditionalGeneration) -> dict[str, int]:
    """Parameters in total and active per token, with the parts they come from."""
    count = lambda module: sum(p.numel() for p in module.parameters())
    moe = _moe_layers(model)
    routed = sum(count(m.experts) for m in moe.values())
    top_k = model.config.text_config.num_experts_per_tok
    skipped = sum(count(m.experts) * (m.num_experts - top_k) // m.num_experts for m in moe.values())
    total = count(model)
    return {
        "total": total,
        "active_per_token": total - skipped,
        "vision_encoder": count(model.vision_model),
        "projector": count(model.multi_modal_projector),
        "language_model": count(model.language_model),
        "routed_experts": routed,
        "shared_experts": sum(count(m.shared_expert) for m in moe.values()),
        "routers": sum(count(m.router) for m in moe.values()),
    }


@torch.no_grad()
def expert_usage(model: Llama4ForConditionalGeneration, processor: ProcessorMixin, chats: Sequence[tuple],
                 batch_size: int = 32) -> dict[int, dict[str, list[float]]]:
    """Per MoE layer and modality, the share of routed token slots each expert receives over
    ``chats`` (pairs of image and question), read in one teacher-forced forward each.

    Hooks on each layer's router record its top-k choices; image tokens are the
    ``<|patch|>`` positions, text tokens every other unpadded position."""
    model.eval()
    moe = _moe_layers(model)
    counts = {i: {m: torch.zeros(layer.num_experts) for m in MODALITIES} for i, layer in moe.items()}
    chosen: dict[int, torch.Tensor] = {}

    def record(index: int):
        def hook(router, inputs, output) -> None:
            chosen[index] = output[1].topk(router.top_k, dim=-1).indices  # output: (scores, logits)
        return hook

    handles = [layer.router.register_forward_hook(record(i)) for i, layer in moe.items()]
    try:
        for start in range(0, len(chats), batch_size):
            chunk = chats[start : start + batch_size]
            texts = [processor.apply_chat_template([user_turn(q)], add_generation_prompt=True, tokenize=False) for _, q in chunk]
            inputs = processor(text=texts, images=[image for image, _ in chunk], padding=True, return_tensors="pt")
            model(**inputs.to(model.device))
            is_image = (inputs["input_ids"] == model.config.image_token_id).flatten().cpu()
            real = inputs["attention_mask"].flatten().bool().cpu()
            for i, picks in chosen.items():
                for modality, mask in (("image", is_image), ("text", real & ~is_image)):
                    counts[i][modality] += torch.bincount(picks.cpu()[mask].flatten(), minlength=len(counts[i][modality]))
    finally:
        for handle in handles:
            handle.remove()
    return {i: {m: (c / c.sum().clamp(min=1)).tolist() for m, c in per.items()} for i, per in counts.items()}


def held_out_chats(count: int) -> list[tuple]:
    """``count`` (image, question) pairs from held-out scenes, every question kind mixed in."""
    pairs = held_out_questions(max(1, count // 8 + 1))[:count]
    return [(render(scene), question.text) for scene, question in pairs]


def plot_usage(usage: dict[int, dict[str, list[float]]], path: Path) -> Path:
    """Grouped bars: per MoE layer, each expert's share of image tokens and of text tokens."""
    figure, axes = plt.subplots(1, len(usage), figsize=(3.2 * len(usage), 3.2), dpi=100, sharey=True, squeeze=False)
    for ax, (layer, per) in zip(axes[0], usage.items()):
        experts = range(len(per["image"]))
        for offset, modality in ((-0.2, "image"), (0.2, "text")):
            ax.bar([e + offset for e in experts], per[modality], width=0.4, label=f"{modality} tokens")
        ax.set(title=f"layer {layer}", xlabel="expert", xticks=list(experts))
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel("share of tokens")
    axes[0][0].legend()
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
