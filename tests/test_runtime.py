"""The runtime seam: the load plan decides device and dtype per component, and the engine
reaches weights only through a backend."""

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline

from dreamloom.config import Settings
from dreamloom.generate.engine import Engine
from dreamloom.generate.request import GenerationRequest
from dreamloom.models.loading import PickleRefused
from dreamloom.models.manager import ModelManager
from dreamloom.models.registry import ModelEntry
from dreamloom.runtime.backend import Backend, WeightSource
from dreamloom.runtime.diffusers_backend import DiffusersBackend
from dreamloom.runtime.plan import LoadPlan, Placement

CPU32 = Placement(device="cpu", dtype="float32")


def _modules(pipeline: DiffusionPipeline) -> dict[str, torch.nn.Module]:
    return {name: c for name, c in pipeline.components.items() if isinstance(c, torch.nn.Module)}


class RecordingBackend(DiffusersBackend):
    """The diffusers backend, counting what it loads."""

    def __init__(self):
        self.loaded: list[str] = []

    def load(self, entry: ModelEntry, plan: LoadPlan, source: WeightSource) -> DiffusionPipeline:
        self.loaded.append(entry.name)
        return super().load(entry, plan, source)


def test_default_plan_puts_every_component_on_cpu_float32(engine):
    plan = engine.models.plan
    assert plan == LoadPlan(default=CPU32) and isinstance(engine.models.backend, Backend)
    modules = _modules(engine.models.get("random-sd").pipeline)
    assert set(modules) == {"unet", "vae", "text_encoder"}
    for name, module in modules.items():
        assert {p.device.type for p in module.parameters()} == {"cpu"}, name
        assert {p.dtype for p in module.parameters()} == {torch.float32}, name
    assert plan.describe(sorted(modules)) == (
        "backend: diffusers\ndefault: cpu float32\ntext_encoder: cpu float32\nunet: cpu float32\nvae: cpu float32"
    )
    assert LoadPlan.model_validate(plan.model_dump()) == plan


def test_plan_from_settings_follows_the_device_rules():
    assert LoadPlan.from_settings(Settings(device="cpu", dtype="bf16")).default == Placement(device="cpu", dtype="bfloat16")
    with pytest.raises(ValueError, match="unknown dtype"):
        LoadPlan.from_settings(Settings(device="cpu", dtype="int3"))


def test_a_per_component_dtype_is_honoured(models_dir):
    plan = LoadPlan(default=CPU32, components={"text_encoder": Placement(device="cpu", dtype="bfloat16")})
    manager = ModelManager(Settings(models_dir=models_dir, device="cpu"), plan=plan)
    pipeline = manager.get("random-sd").pipeline
    assert {p.dtype for p in pipeline.text_encoder.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in pipeline.unet.parameters()} == {p.dtype for p in pipeline.vae.parameters()} == {torch.float32}
    assert "text_encoder: cpu bfloat16" in plan.describe()


def test_the_engine_reaches_weights_only_through_its_backend(models_dir, tmp_path, engine):
    backend = RecordingBackend()
    settings = Settings(models_dir=models_dir, outputs_dir=tmp_path, device="cpu")
    ours = Engine(settings, ModelManager(settings, backend=backend))
    request = GenerationRequest(prompt="a red circle", model="random-sd", steps=3, seed=5)
    first = ours.generate(request).images[0]
    ours.generate(request)
    assert backend.loaded == ["random-sd"]  # loaded once, through the backend, then kept
    assert np.array_equal(np.asarray(first), np.asarray(engine.generate(request).images[0]))


def test_pickle_is_still_refused_through_the_backend(tmp_path):
    (tmp_path / "evil.ckpt").write_bytes(b"not really a checkpoint")
    manager = ModelManager(Settings(models_dir=tmp_path, device="cpu"))
    with pytest.raises(PickleRefused):
        manager.get("evil")
