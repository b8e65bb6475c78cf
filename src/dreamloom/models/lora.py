"""LoRA weight files: writing them after training, loading them into a pipeline, hashing them.

A LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") adds
``scale * up @ down`` to a layer's weight, with ``scale = alpha / rank``. Two file layouts
are in use for Stable Diffusion: diffusers' (``pytorch_lora_weights.safetensors``, what
``pipeline.load_lora_weights`` reads) and kohya-ss's single file (``lora_unet_*`` and
``lora_te_*`` keys with ``lora_down``/``lora_up``/``alpha``, what AUTOMATIC1111, SD.Next
and ComfyUI read). dreamloom writes both and, through diffusers, loads either.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline
from diffusers.utils import convert_state_dict_to_kohya
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

from dreamloom.models.loading import _refuse_pickle
from dreamloom.models.registry import DIFFUSERS_LORA_FILE, PICKLE_SUFFIXES, ModelEntry


@dataclass(frozen=True)
class LoraFiles:
    """The two files ``save_lora_weights`` writes, holding the same LoRA."""

    diffusers: Path
    kohya: Path


def _adapter_name(model: torch.nn.Module) -> str:
    names = list(getattr(model, "peft_config", {}))
    if len(names) != 1:
        raise ValueError(f"{type(model).__name__} must carry exactly one peft LoRA adapter, found {names or 'none'}")
    return names[0]


def _lora_state(model: torch.nn.Module, prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The adapter's peft state dict with ``prefix`` before every key, and each adapted
    layer's kohya alpha (``scale * rank``, so any peft scaling, rsLoRA included, survives)."""
    adapter = _adapter_name(model)
    state = get_peft_model_state_dict(model, adapter_name=adapter)
    alphas = {}
    for key in state:
        if key.endswith(".lora_A.weight"):
            layer_name = key.removesuffix(".lora_A.weight")
            layer = model.get_submodule(layer_name)
            alphas[prefix + layer_name] = layer.scaling[adapter] * layer.r[adapter]
    return {prefix + k: v.contiguous() for k, v in state.items()}, alphas


def _text_encoder_prefix(text_encoder: torch.nn.Module) -> str:
    """transformers 5 dropped CLIPTextModel's ``text_model.`` level; LoRA files keep it, so
    that every tool (and transformers 4) finds the layers."""
    return "" if hasattr(text_encoder, "text_model") else "text_model."


def _kohya_state(layers: dict[str, torch.Tensor], alphas: dict[str, float]) -> dict[str, torch.Tensor]:
    """kohya keys for ``unet.*`` / ``text_encoder.*`` peft keys, one layer at a time so each
    ``alpha`` is the layer's own (diffusers' converter writes the rank there)."""
    kohya = {}
    for layer_name, alpha in alphas.items():
        pair = {f"{layer_name}.lora_{ab}.weight": layers[f"{layer_name}.lora_{ab}.weight"] for ab in "AB"}
        converted = convert_state_dict_to_kohya(pair)
        alpha_key = next(k for k in converted if k.endswith(".alpha"))
        converted[alpha_key] = torch.tensor(float(alpha))
        # kohya names SD 1.x/2.x's one text encoder "lora_te"; diffusers writes SDXL's "lora_te1"
        kohya.update({k.replace("lora_te1_", "lora_te_", 1): v for k, v in converted.items()})
    return kohya


def save_lora_weights(
    folder: Path,
    unet: torch.nn.Module,
    text_encoder: torch.nn.Module | None = None,
    metadata: dict[str, str] | None = None,
) -> LoraFiles:
    """Write the LoRA adapters of ``unet`` (and ``text_encoder``) into ``folder`` in both layouts.

    Args:
        folder: created if missing. It receives ``pytorch_lora_weights.safetensors`` (diffusers
            layout, with each adapter's peft config so ``load_lora_weights(folder)`` restores its
            alpha) and ``<folder name>.safetensors`` (kohya layout, the file to copy into
            AUTOMATIC1111's ``models/Lora``). The folder itself, placed in dreamloom's
            ``models/Lora/``, is a LoRA named after it.
        unet: a ``UNet2DConditionModel`` with one peft LoRA adapter (``unet.add_adapter(LoraConfig(...))``).
        text_encoder: a ``CLIPTextModel`` with one peft LoRA adapter, or None if it was not trained.
        metadata: strings for the kohya file's safetensors header (base model, instance prompt,
            steps, ...), next to kohya's ``ss_network_*`` keys written here.
    """
    folder = Path(folder)
    if folder.name == DIFFUSERS_LORA_FILE.removesuffix(".safetensors"):
        raise ValueError(f"name the folder otherwise: its kohya file would overwrite {DIFFUSERS_LORA_FILE}")
    folder.mkdir(parents=True, exist_ok=True)
    models = {"unet": (unet, "")}
    if text_encoder is not None:
        models["text_encoder"] = (text_encoder, _text_encoder_prefix(text_encoder))
    diffusers_args, kohya_layers, kohya_alphas = {}, {}, {}
    for component, (model, prefix) in models.items():
        state, alphas = _lora_state(model, prefix)
        # peft's own key names: diffusers reads them for every layer type, while its older
        # "lora.down" names cover attention only and a file mixing both loads half its layers
        diffusers_args[f"{component}_lora_layers"] = state
        diffusers_args[f"{component}_lora_adapter_metadata"] = model.peft_config[_adapter_name(model)].to_dict()
        kohya_layers.update({f"{component}.{k}": v for k, v in state.items()})
        kohya_alphas.update({f"{component}.{k}": alpha for k, alpha in alphas.items()})
    StableDiffusionPipeline.save_lora_weights(folder, weight_name=DIFFUSERS_LORA_FILE, **diffusers_args)
    kohya = folder / f"{folder.name}.safetensors"
    unet_config = unet.peft_config[_adapter_name(unet)]
    header = {"ss_network_module": "networks.lora", "ss_network_dim": str(unet_config.r),
              "ss_network_alpha": str(unet_config.lora_alpha), **(metadata or {})}
    save_file(_kohya_state(kohya_layers, kohya_alphas), kohya, metadata=header)
    return LoraFiles(diffusers=folder / DIFFUSERS_LORA_FILE, kohya=kohya)


def weights_file(entry: ModelEntry) -> Path:
    """The file holding a LoRA entry's tensors (a folder's ``pytorch_lora_weights.safetensors``)."""
    return entry.path / DIFFUSERS_LORA_FILE if entry.path.is_dir() else entry.path


def load_lora(pipeline: DiffusionPipeline, entry: ModelEntry, adapter_name: str, allow_pickle: bool = False) -> None:
    """Add the LoRA of ``entry`` to ``pipeline`` as adapter ``adapter_name`` (inactive until
    ``set_adapters``); pickle files (.pt/.ckpt/.bin) only with ``allow_pickle``."""
    path = weights_file(entry)
    if path.suffix in PICKLE_SUFFIXES and not allow_pickle:
        _refuse_pickle(entry)
    if not hasattr(pipeline, "load_lora_weights"):
        raise ValueError(f"{type(pipeline).__name__} takes no LoRAs")
    pipeline.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=adapter_name)


def lora_hash(entry: ModelEntry) -> str:
    """AUTOMATIC1111's short LoRA hash ("Lora hashes" in the infotext): the first 12 hex digits
    of kohya's "addnet" SHA-256, taken over a .safetensors file's tensor data without its
    header (so editing metadata keeps the hash); over the whole file for pickle."""
    path = weights_file(entry)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if path.suffix == ".safetensors":
            f.seek(8 + int.from_bytes(f.read(8), "little"))
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]
