"""The generation engine: one call for txt2img, img2img and inpaint, and saving results.

Front ends (CLI, HTTP API, web UI) build a ``GenerationRequest`` and call ``generate``;
nothing here knows about them.
"""

from __future__ import annotations

import threading
from pathlib import Path

from dreamloom.config import Settings
from dreamloom.generate.batched import BatchMember, batch_key, txt2img_batch
from dreamloom.generate.img2img import img2img
from dreamloom.generate.infotext import save_with_infotext
from dreamloom.generate.inpaint import inpaint
from dreamloom.generate.lora_syntax import lora_weights
from dreamloom.generate.progress import ProgressFn
from dreamloom.generate.request import GenerationRequest, GenerationResult
from dreamloom.generate.runner import RunOptions
from dreamloom.generate.txt2img import txt2img
from dreamloom.models.manager import ModelManager


def mode_of(request: GenerationRequest) -> str:
    if request.mask is not None:
        return "inpaint"
    return "img2img" if request.init_image is not None else "txt2img"


class Engine:
    def __init__(self, settings: Settings | None = None, models: ModelManager | None = None):
        self.settings = settings or Settings.from_env()
        self.models = models or ModelManager(self.settings)

    def generate(
        self,
        request: GenerationRequest,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
        preview_every: int = 0,
        allow_paths: bool = False,
        interrupt: threading.Event | None = None,
    ) -> GenerationResult:
        """Run ``request`` as txt2img, img2img or inpaint, whichever its inputs ask for, with the
        LoRAs it asks for (its ``loras`` and the prompt's ``<lora:name:weight>`` tags).

        ``cancel`` stops the run with ``GenerationCancelled``; ``interrupt`` stops it keeping the
        images drawn so far (``result.extra["interrupted"]``), as AUTOMATIC1111's interrupt does.

        Requests for one model run one at a time: its LoRAs are set on modules that every
        request's pipeline shares. ``allow_paths`` lets ``request.model`` and LoRA names be
        filesystem paths (local CLI only)."""
        loaded = self.models.get(request.model, allow_paths=allow_paths)
        run = {"txt2img": txt2img, "img2img": img2img, "inpaint": inpaint}[mode_of(request)]
        weights = lora_weights(request.prompt, request.loras)
        with self.models.with_loras(loaded, weights, allow_paths=allow_paths) as lora_hashes:
            options = RunOptions(loaded.hash, progress, cancel, preview_every, lora_hashes, interrupt)
            return run(loaded.pipeline, request, options)

    def generate_batch(self, members: list[BatchMember], preview_every: int = 0) -> list[GenerationResult | None]:
        """Run ``members`` (txt2img requests of one ``batch_key``) in shared forward passes: one
        result per member, each with the images its request draws alone; None if cancelled.

        The LoRAs (equal for all, by the key) are set once for the whole batch."""
        if not members:
            return []
        keys = {batch_key(m.request) for m in members}
        if None in keys or len(keys) > 1:
            raise ValueError("generate_batch takes txt2img requests with one batch_key; run the others with generate")
        request = members[0].request
        loaded = self.models.get(request.model)
        weights = lora_weights(request.prompt, request.loras)
        with self.models.with_loras(loaded, weights) as lora_hashes:
            options = RunOptions(loaded.hash, preview_every=preview_every, lora_hashes=lora_hashes)
            return txt2img_batch(loaded.pipeline, members, options)

    def save(self, result: GenerationResult, folder: Path | None = None) -> list[Path]:
        """Write every image as PNG with its infotext; names never overwrite older files."""
        folder = Path(folder or self.settings.outputs_dir)
        folder.mkdir(parents=True, exist_ok=True)
        start = len(list(folder.glob("*.png")))
        paths = []
        for offset, (image, seed, text) in enumerate(zip(result.images, result.seeds, result.infotexts)):
            index = start + offset
            while (path := folder / f"{index:05d}-{seed}.png").exists():
                index += 1
            paths.append(save_with_infotext(image, path, text))
        return paths
