"""Load an LDM-layout single-file checkpoint (``.safetensors``, or ``.ckpt`` when allowed) offline.

diffusers' ``from_single_file`` converts the weights; what it cannot know offline are the
configs of the pipeline's parts and the CLIP tokenizer's vocabulary, which are not in the
file. The configs come from a local diffusers folder with the same tensors (the embedded
models, the models folder's), else from the architecture table dreamloom ships
(``architectures.py``). The tokenizer vocabulary comes from the models folder's
``tokenizers/`` or the Hugging Face cache.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import diffusers
import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline
from diffusers.loaders.single_file_utils import infer_diffusers_model_type
from huggingface_hub import try_to_load_from_cache
from safetensors import safe_open
from transformers import CLIPTokenizer

from dreamloom.models.architectures import ARCHITECTURES, TOKENIZERS, check_matches, write_config_folder
from dreamloom.models.export import ldm_shapes


class MissingTokenizer(ValueError):
    """Raised when a checkpoint's tokenizer vocabulary is nowhere on this machine."""


def checkpoint_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a single-file checkpoint; only a ``.safetensors`` header is read,
    a pickle checkpoint (the caller has allowed it) is memory-mapped."""
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    state = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    state = state.get("state_dict", state)
    return {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}


def model_type(shapes: dict[str, tuple[int, ...]]) -> str:
    """diffusers' name for the architecture ("v1", "v2", "xl_base", ...), told by diffusers'
    own ``infer_diffusers_model_type`` from names and shapes (meta tensors: nothing allocated)."""
    return infer_diffusers_model_type({k: torch.empty(s, device="meta") for k, s in shapes.items()})


def matching_folder(shapes: dict[str, tuple[int, ...]], known_folders: list[Path]) -> Path | None:
    """The first local diffusers folder whose LDM export would have exactly these tensors."""
    for folder in known_folders:
        try:
            if ldm_shapes(folder) == shapes:
                return Path(folder)
        except (OSError, KeyError, ValueError):
            continue
    return None


def find_tokenizer(repository: str, settings: dict, tokenizers_dir: Path | None) -> CLIPTokenizer:
    """CLIP's tokenizer as published in ``repository``, from ``tokenizers_dir/<its name>`` (a
    folder with ``vocab.json`` and ``merges.txt``, or ``tokenizer.json``) or else the Hugging Face cache.

    The hub is not asked: unreachable, it costs minutes of retries before failing, and a
    user with a network fills the cache with one ``huggingface-cli download``."""
    name = repository.split("/")[-1]
    local = tokenizers_dir / name if tokenizers_dir else None
    if local is not None and any((local / f).exists() for f in ("vocab.json", "tokenizer.json")):
        return CLIPTokenizer.from_pretrained(local, **settings)
    cached = try_to_load_from_cache(repository, "vocab.json")
    if isinstance(cached, str) and (Path(cached).parent / "merges.txt").exists():
        return CLIPTokenizer.from_pretrained(Path(cached).parent, **settings)
    where = local if local is not None else f"<models folder>/tokenizers/{name}"
    raise MissingTokenizer(
        f"this checkpoint needs the CLIP tokenizer of {repository}, which is not on this machine: put its "
        f"vocab.json and merges.txt in {where}, or run `huggingface-cli download {repository} vocab.json merges.txt`"
    )


def load_single_file(
    path: Path,
    dtype: torch.dtype,
    known_folders: list[Path] = (),
    tokenizers_dir: Path | None = None,
) -> DiffusionPipeline:
    """The pipeline of an LDM-layout checkpoint, built without reaching the model hub for configs."""
    path = Path(path)
    shapes = checkpoint_shapes(path)
    folder = matching_folder(shapes, list(known_folders))
    if folder is not None:
        return StableDiffusionPipeline.from_single_file(str(path), config=str(folder), local_files_only=True,
                                                        dtype=dtype)
    kind = model_type(shapes)
    check_matches(kind, shapes)
    tokenizers = {
        component: find_tokenizer(repository, settings, tokenizers_dir)
        for component, (repository, settings) in TOKENIZERS.get(kind, {}).items()
    }
    pipeline_class = getattr(diffusers, ARCHITECTURES[kind]["model_index.json"]["_class_name"])
    with tempfile.TemporaryDirectory(prefix="dreamloom-config-") as tmp:
        config = write_config_folder(kind, Path(tmp))
        return pipeline_class.from_single_file(
            str(path), config=str(config), local_files_only=True, dtype=dtype, **tokenizers
        )
