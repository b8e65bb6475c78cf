"""Model registry, safe loading, LDM single-file export and re-import."""

import numpy as np
import pytest
from safetensors import safe_open

from dreamloom.config import Settings
from dreamloom.generate.engine import Engine
from dreamloom.generate.request import GenerationRequest
from dreamloom.models.device import pick_device, pick_dtype
from dreamloom.models.export import export_single_file
from dreamloom.models.loading import PickleRefused
from dreamloom.models.registry import ModelRegistry


def test_registry_lists_embedded_and_folder_models(models_dir):
    (models_dir / "weird.txt").write_text("not a model")
    names = {e.name: e for e in ModelRegistry(models_dir).entries()}
    assert names["random-sd"].format == "diffusers"
    assert "weird.txt" not in names


def test_export_writes_ldm_layout_and_loads_back_to_the_same_images(models_dir, tmp_path):
    target = export_single_file(models_dir / "random-sd", models_dir / "random-sd-single.safetensors")
    with safe_open(str(target), framework="pt") as f:
        keys = set(f.keys())
    assert {"model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.out.2.weight",
            "first_stage_model.encoder.conv_in.weight", "first_stage_model.decoder.mid.attn_1.q.weight",
            "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"} <= keys
    engine = Engine(Settings(models_dir=models_dir, device="cpu"))
    assert engine.models.registry.resolve("random-sd-single").format == "single-file"
    request = GenerationRequest(prompt="a red circle", model="random-sd", steps=4, seed=3)
    original = np.asarray(engine.generate(request).images[0], dtype=np.int16)
    single = np.asarray(engine.generate(request.model_copy(update={"model": "random-sd-single"})).images[0], dtype=np.int16)
    assert np.abs(original - single).max() <= 1
    target.unlink()


def test_export_refuses_other_suffixes(models_dir, tmp_path):
    with pytest.raises(ValueError, match="safetensors"):
        export_single_file(models_dir / "random-sd", tmp_path / "model.ckpt")


def test_pickle_is_refused_unless_allowed(models_dir, tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "old.ckpt").write_bytes(b"\x80\x04not really a checkpoint")
    engine = Engine(Settings(models_dir=folder, device="cpu"))
    with pytest.raises(PickleRefused, match="--allow-pickle"):
        engine.generate(GenerationRequest(prompt="x", model="old"))


def test_device_and_dtype_choice():
    assert pick_device("cpu").type == "cpu"
    assert str(pick_dtype(pick_device("cpu"))) == "torch.float32"
    assert str(pick_dtype(pick_device("cpu"), "bf16")) == "torch.bfloat16"
    with pytest.raises(ValueError, match="unknown dtype"):
        pick_dtype(pick_device("cpu"), "int3")
