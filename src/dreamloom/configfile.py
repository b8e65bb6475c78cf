"""Typed run configs: a YAML file, then ``key.sub=value`` overrides, validated by a pydantic model.

Every recipe (tiny-SD, tiny-CLIP, tiny-VLM, DreamBooth) loads its config this way, so a bad
key or value is refused before any work starts, in one line that names the key.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from dreamloom.errors import one_line

Config = TypeVar("Config", bound=BaseModel)


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides to a nested dict, in place; values are parsed as YAML
    (``steps=7`` is an int, ``sizes=[8, 8]`` a list, ``class_prompt=null`` None)."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not of the form key=value")
        node = raw
        *parents, leaf = key.split(".")
        for depth, part in enumerate(parents, 1):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {'.'.join(parents[:depth])} is a value, not a section")
        node[leaf] = yaml.safe_load(value)
    return raw


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping in the YAML file ``path`` (an empty file is an empty mapping)."""
    if not path.exists():
        raise FileNotFoundError(f"no such config: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict | None):
        raise ValueError(f"{path}: expected key: value pairs, found a {type(raw).__name__}")
    return raw or {}


def load_config(model: type[Config], path: Path | str | None, overrides: Sequence[str] = ()) -> Config:
    """``model`` validated from the YAML at ``path`` (None: the model's defaults) with ``overrides``.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` with one line naming the
    key (``lora.rank: Input should be greater than 0``, ``lora.rnak: unknown config key``)."""
    raw = read_yaml(Path(path)) if path is not None else {}
    try:
        return model.model_validate(apply_overrides(raw, overrides))
    except ValidationError as error:
        raise ValueError(one_line(error, whole="config", messages={"extra_forbidden": "unknown config key"})) from None
