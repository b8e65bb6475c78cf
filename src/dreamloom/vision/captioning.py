"""Caption a training folder the way DreamBooth and LoRA trainers read it (kohya's
convention, which dreamloom's DreamBooth trainer follows): ``name.txt`` beside ``name.png``,
optionally naming the subject by its unique token and class noun ("a sks star ...")."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dreamloom.vision.backends import VisionBackend
from dreamloom.vision.images import IMAGE_SUFFIXES


def insert_token(caption: str, token: str, class_noun: str) -> str:
    """``caption`` with ``token`` before the first mention of ``class_noun`` ("a red star on a
    blue background" -> "a red sks star on a blue background"), as the DreamBooth paper writes
    instance prompts; when the caption never names the class, "sks star, " goes in front."""
    match = re.search(rf"\b{re.escape(class_noun)}\b", caption, flags=re.IGNORECASE)
    if match is None:
        return f"{token} {class_noun}, {caption}"
    return f"{caption[:match.start()]}{token} {caption[match.start():]}"


@dataclass
class CaptionReport:
    written: list[Path] = field(default_factory=list)
    #: Images whose caption file already existed (kept: pass ``overwrite`` to replace them).
    kept: list[Path] = field(default_factory=list)


def folder_images(folder: Path) -> list[Path]:
    """The images directly in ``folder``, by name; a ValueError when two would share a caption
    file (``a.png`` and ``a.jpg`` both caption to ``a.txt``)."""
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    seen: dict[Path, Path] = {}
    for image in images:
        if (other := seen.setdefault(image.with_suffix(".txt"), image)) is not image:
            raise ValueError(f"{other.name} and {image.name} would both be captioned in {image.stem}.txt; rename one")
    return images


def caption_folder(backend: VisionBackend, folder: Path, token: str | None = None, class_noun: str | None = None,
                   overwrite: bool = False, progress: Callable[[int, int], None] | None = None) -> CaptionReport:
    """Write ``image.txt`` beside every image of ``folder``; an existing caption file is kept
    unless ``overwrite``. ``progress(done, total)`` is called after each image."""
    if (token is None) != (class_noun is None):
        raise ValueError("--token and --class-noun go together: the token names a subject of the class (sks star)")
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    images = folder_images(folder)
    if not images:
        raise ValueError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    report = CaptionReport()
    for done, image in enumerate(images, 1):
        target = image.with_suffix(".txt")
        if target.exists() and not overwrite:
            report.kept.append(image)
        else:
            caption = backend.caption(image)
            if token is not None:
                caption = insert_token(caption, token, class_noun)
            target.write_text(caption + "\n")
            report.written.append(target)
        if progress is not None:
            progress(done, len(images))
    return report
