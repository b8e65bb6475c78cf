"""The generation engine: one call for txt2img, img2img and inpaint, alone or batched, and saving.

Front ends (CLI, HTTP API, web UI) and the job system build ``GenerationRequest``s and call
``generate`` or ``generate_batch``; nothing here knows about them. Both run the same path (a
single request is a batch of one) through the stages of ``hooks.Stage``; extensions attach at
those stages through ``Engine.hooks``.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

from dreamloom.config import Settings
from dreamloom.generate.batched import BatchMember, batch_key
from dreamloom.generate.enhance import check_enhanced
from dreamloom.generate.hooks import Stage, StageHooks
from dreamloom.generate.infotext import png_bytes
from dreamloom.generate.lora_syntax import lora_weights
from dreamloom.generate.modes import mode_of
from dreamloom.generate.progress import GenerationCancelled, ProgressFn
from dreamloom.generate.request import GenerationRequest, GenerationResult
from dreamloom.generate.run import run_members
from dreamloom.models.manager import ModelManager


class Engine:
    """Generates with the models of ``models`` (default: a ``ModelManager`` over ``settings``,
    loading through its runtime backend and load plan); ``hooks`` run at every run's stages."""

    def __init__(self, settings: Settings | None = None, models: ModelManager | None = None,
                 hooks: StageHooks | None = None):
        self.settings = settings or Settings.from_env()
        self.models = models or ModelManager(self.settings)
        self.hooks = hooks if hooks is not None else StageHooks()

    def generate(
        self,
        request: GenerationRequest,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
        preview_every: int = 0,
        allow_paths: bool = False,
        interrupt: threading.Event | None = None,
        skip: threading.Event | None = None,
    ) -> GenerationResult:
        """Run ``request`` as txt2img, img2img or inpaint, whichever its inputs ask for, with the
        LoRAs it asks for (its ``loras`` and the prompt's ``<lora:name:weight>`` tags): a batch of
        one through ``generate_batch``'s path.

        ``cancel`` stops the run with ``GenerationCancelled``; ``interrupt`` stops it keeping the
        images drawn so far (``result.extra["interrupted"]``), as AUTOMATIC1111's interrupt does;
        ``skip`` cuts the current batch short (keeping its images) and goes on with the next.

        Requests for one model run one at a time: its LoRAs are set on modules that every
        request's pipeline shares. ``allow_paths`` lets ``request.model`` and LoRA names be
        filesystem paths (local CLI only)."""
        member = BatchMember(request, progress, cancel, interrupt, skip)
        (result,) = self._run([member], preview_every, allow_paths)
        if result is None:
            raise GenerationCancelled("generation cancelled")
        return result

    def generate_batch(self, members: list[BatchMember], preview_every: int = 0) -> list[GenerationResult | None]:
        """Run ``members`` in shared forward passes: one result per member, each with the images
        its request draws alone; None if cancelled. Several members must share one ``batch_key``
        (txt2img of one lane); a single member may be any request.

        The LoRAs (equal for all, by the key) are set once for the whole batch."""
        return self._run(members, preview_every)

    def _run(self, members: list[BatchMember], preview_every: int, allow_paths: bool = False) -> list[GenerationResult | None]:
        if not members:
            return []
        # 1. prepare each request (its hooks may rewrite it), then check the batch still shares a pass
        members = [
            replace(m, request=check_enhanced(self.hooks.chain(Stage.prepare_request, "request", request=m.request,
                                                               mode=mode_of(m.request))))
            for m in members
        ]
        keys = {batch_key(m.request) for m in members}
        if len(members) > 1 and (None in keys or len(keys) > 1):
            raise ValueError("generate_batch takes several requests of one batch_key (txt2img); run the others alone")
        # 2. the model with the requested LoRAs set, held for the whole run
        request = members[0].request
        loaded = self.models.get(request.model, allow_paths=allow_paths)
        weights = lora_weights(request.prompt, request.loras)
        with self.models.with_loras(loaded, weights, allow_paths=allow_paths) as lora_hashes:
            # 3.-6. encode, condition, denoise, decode, post-process
            return run_members(loaded.pipeline, members, self.hooks, loaded.hash, lora_hashes, preview_every)

    def encode(self, result: GenerationResult, paths: list[Path]) -> list[bytes]:
        """Every image as PNG bytes carrying its infotext, after the ``save`` hooks (each sees the
        path its image goes to: a file, or a job's output name). Whoever stores the images, the
        command line in a folder or a job in its store, goes through here."""
        return [
            png_bytes(image, self.hooks.chain(Stage.save, "infotext", request=result.request, image=image, seed=seed,
                                              infotext=text, path=path))
            for image, seed, text, path in zip(result.images, result.seeds, result.infotexts, paths)
        ]

    def save(self, result: GenerationResult, folder: Path | None = None) -> list[Path]:
        """Write every image as PNG with its infotext (through the ``save`` hooks); names never
        overwrite older files."""
        folder = Path(folder or self.settings.outputs_dir)
        folder.mkdir(parents=True, exist_ok=True)
        index = len(list(folder.glob("*.png")))
        paths = []
        for seed in result.seeds:
            while (path := folder / f"{index:05d}-{seed}.png").exists():
                index += 1
            paths.append(path)
            index += 1
        for path, data in zip(paths, self.encode(result, paths)):
            path.write_bytes(data)
        return paths
