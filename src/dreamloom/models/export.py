"""Write a diffusers SD 1.x/2.x-style pipeline as one LDM-layout ``.safetensors`` file.

That layout (``model.diffusion_model.*``, ``first_stage_model.*``,
``cond_stage_model.transformer.*``) is what AUTOMATIC1111, SD.Next and ComfyUI load; it
is the inverse of the conversion diffusers' ``from_single_file`` performs.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _swap_prefix(key: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        if key == old or key.startswith(old + "."):
            return new + key[len(old):]
    return key


def _unet_key(key: str, layers_per_block: int, up_has_attention: list[bool]) -> str:
    """One diffusers UNet2DConditionModel key in LDM's ``model.diffusion_model`` naming."""
    n = layers_per_block
    parts = key.split(".")
    simple = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
              "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    mapped = _swap_prefix(key, simple)
    if mapped != key:
        return mapped
    if parts[0] == "down_blocks":
        i, kind, j, rest = int(parts[1]), parts[2], parts[3], ".".join(parts[4:])
        if kind == "downsamplers":
            return f"input_blocks.{1 + i * (n + 1) + n}.0.op.{rest.removeprefix('conv.')}"
        block = f"input_blocks.{1 + i * (n + 1) + int(j)}"
        return f"{block}.0.{_swap_prefix(rest, _RESNET)}" if kind == "resnets" else f"{block}.1.{rest}"
    if parts[0] == "mid_block":
        kind, j, rest = parts[1], int(parts[2]), ".".join(parts[3:])
        if kind == "attentions":
            return f"middle_block.1.{rest}"
        return f"middle_block.{2 * j}.{_swap_prefix(rest, _RESNET)}"
    if parts[0] == "up_blocks":
        i, kind, j, rest = int(parts[1]), parts[2], parts[3], ".".join(parts[4:])
        if kind == "upsamplers":
            return f"output_blocks.{i * (n + 1) + n}.{2 if up_has_attention[i] else 1}.{rest}"
        block = f"output_blocks.{i * (n + 1) + int(j)}"
        return f"{block}.0.{_swap_prefix(rest, _RESNET)}" if kind == "resnets" else f"{block}.1.{rest}"
    raise KeyError(f"no LDM name for UNet key {key!r}")


def _vae_key(key: str, levels: int) -> str:
    parts = key.split(".")
    if parts[0] in ("quant_conv", "post_quant_conv"):
        return key
    side, rest = parts[0], parts[1:]
    if rest[0] == "conv_norm_out":
        return ".".join([side, "norm_out", *rest[1:]])
    if rest[0] in ("conv_in", "conv_out"):
        return key
    if rest[0] == "mid_block":
        kind, j, tail = rest[1], int(rest[2]), ".".join(rest[3:])
        if kind == "attentions":
            return f"{side}.mid.attn_1.{_swap_prefix(tail, _VAE_ATTENTION)}"
        return f"{side}.mid.block_{j + 1}.{tail.replace('conv_shortcut', 'nin_shortcut')}"
    if rest[0] in ("down_blocks", "up_blocks"):
        i, kind, tail = int(rest[1]), rest[2], ".".join(rest[3:])
        level = i if side == "encoder" else levels - 1 - i
        group = "down" if side == "encoder" else "up"
        if kind in ("downsamplers", "upsamplers"):
            return f"{side}.{group}.{level}.{kind.removesuffix('samplers')}sample.{tail.removeprefix('0.')}"
        j, tail = tail.split(".", 1)
        return f"{side}.{group}.{level}.block.{j}.{tail.replace('conv_shortcut', 'nin_shortcut')}"
    raise KeyError(f"no LDM name for VAE key {key!r}")


def _weight_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise OSError(f"no .safetensors weights in {folder}")
    return files


def _ldm_layout(folder: Path) -> dict[str, tuple[Path, str, tuple[int, ...]]]:
    """LDM key -> (weights file, diffusers key, LDM shape), read from file headers only."""
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    vae_levels = len(json.loads((folder / "vae" / "config.json").read_text())["block_out_channels"])
    up_attention = ["CrossAttn" in t for t in unet_config["up_block_types"]]
    rename = {
        "unet": lambda k: "model.diffusion_model." + _unet_key(k, unet_config["layers_per_block"], up_attention),
        "vae": lambda k: "first_stage_model." + _vae_key(k, vae_levels),
        # transformers 5 saves CLIPTextModel without its former ``text_model.`` prefix
        "text_encoder": lambda k: "cond_stage_model.transformer." + (k if k.startswith("text_model.") else "text_model." + k),
    }
    layout = {}
    for component, to_ldm in rename.items():
        for file in _weight_files(folder / component):
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():
                    shape = tuple(f.get_slice(key).get_shape())
                    ldm = to_ldm(key)
                    if ".mid.attn_1." in ldm and ldm.endswith(".weight") and len(shape) == 2:
                        shape = (*shape, 1, 1)  # LDM's VAE attention uses 1x1 convolutions
                    layout[ldm] = (file, key, shape)
    return layout


def ldm_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """The LDM key -> shape map an export of ``folder`` would have, without loading tensors."""
    return {k: shape for k, (_, _, shape) in _ldm_layout(Path(folder)).items()}


def diffusers_to_ldm(folder: Path) -> dict[str, torch.Tensor]:
    """The LDM-layout state dict of the diffusers pipeline in ``folder``."""
    state: dict[str, torch.Tensor] = {}
    handles: dict[Path, object] = {}
    for ldm, (file, key, shape) in _ldm_layout(Path(folder)).items():
        if file not in handles:
            handles[file] = safe_open(str(file), framework="pt")
        state[ldm] = handles[file].get_tensor(key).reshape(shape)
    return state


def export_single_file(folder: Path, destination: Path, half: bool = False) -> Path:
    """Write ``folder`` (a diffusers SD pipeline) as one LDM-layout ``.safetensors`` file."""
    state = diffusers_to_ldm(folder)
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    destination = Path(destination)
    if destination.suffix != ".safetensors":
        raise ValueError(f"export writes .safetensors only, not {destination.suffix or 'a file without suffix'}")
    destination.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(destination), metadata={"format": "pt"})
    return destination
