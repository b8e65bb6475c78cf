"""LoRA files and LoRAs in generation, on the shipped tiny model: both file layouts, weights,
parity with plain diffusers, names confined to the LoRA folders, infotext, command line."""

import os
import shutil

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
from peft import LoraConfig, inject_adapter_in_model
from PIL import Image
from safetensors import safe_open
from typer.testing import CliRunner

from dreamloom.cli.main import app
from dreamloom.config import Settings
from dreamloom.generate.engine import Engine
from dreamloom.generate.infotext import request_from_infotext
from dreamloom.generate.lora_syntax import LoraWeight, lora_weights, split_lora_tags
from dreamloom.generate.request import DEFAULT_MODEL, GenerationRequest
from dreamloom.models.loading import PickleRefused
from dreamloom.models.lora import save_lora_weights
from dreamloom.models.registry import ModelRegistry

# diffusers loading a second adapter into the text encoder; expected here
pytestmark = pytest.mark.filterwarnings("ignore:Already found a `peft_config` attribute:UserWarning")

TINY = ModelRegistry(None).resolve("dreamloom-tiny-sd").path
RANK, ALPHA = 4, 8  # alpha != rank: a file that loses alpha draws another image
PROMPT = "a red circle on a white background"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's 32x32 layers are too small to split: on two cores shared with other
    work, torch's second thread costs far more than it saves (minutes instead of seconds)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _with_lora(text_encoder: bool, seed: int = 0) -> StableDiffusionPipeline:
    """The tiny pipeline with seeded LoRA adapters whose up weights are noise too (peft starts
    them at zero, which would change nothing)."""
    pipeline = StableDiffusionPipeline.from_pretrained(TINY)
    torch.manual_seed(seed)
    pipeline.unet.add_adapter(LoraConfig(r=RANK, lora_alpha=ALPHA, init_lora_weights="gaussian",
                                         target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    if text_encoder:
        # transformers 5.24 wants peft >= 0.22 for text_encoder.add_adapter; peft itself adds it just the same
        inject_adapter_in_model(LoraConfig(r=RANK, lora_alpha=ALPHA, init_lora_weights="gaussian",
                                           target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]),
                                pipeline.text_encoder)
    with torch.no_grad():
        for model in (pipeline.unet, pipeline.text_encoder):
            for name, weight in model.named_parameters():
                if "lora_B" in name:
                    weight.normal_(std=0.03)
    return pipeline


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory):
    """A models folder: Lora/unet-only/ and Lora/with-te/ as written by save_lora_weights,
    and their kohya files copied into loras/ (the other folder name) as *-kohya.safetensors."""
    folder = tmp_path_factory.mktemp("models")
    for name, text_encoder in (("unet-only", False), ("with-te", True)):
        pipeline = _with_lora(text_encoder)
        metadata = {"base_model": "dreamloom-tiny-sd", "instance_prompt": "a sks shape"}
        files = save_lora_weights(folder / "Lora" / name, pipeline.unet,
                                  pipeline.text_encoder if text_encoder else None, metadata)
        (folder / "loras").mkdir(exist_ok=True)
        shutil.copy(files.kohya, folder / "loras" / f"{name}-kohya.safetensors")
    return folder


@pytest.fixture(scope="module")
def lora_engine(lora_dir) -> Engine:
    return Engine(Settings(models_dir=lora_dir, device="cpu"))


def _request(prompt: str = PROMPT, **kw) -> GenerationRequest:
    return GenerationRequest(**{"prompt": prompt, "sampler": "Euler", "steps": 3, "seed": 3,
                                "width": 32, "height": 32, **kw})


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def _draw(engine: Engine, prompt_suffix: str = "", **kw) -> np.ndarray:
    return _pixels(engine.generate(_request(PROMPT + prompt_suffix, **kw)).images[0])


@pytest.fixture(scope="module")
def base(lora_dir) -> np.ndarray:
    """The tiny model's image from an engine that never loaded a LoRA."""
    return _draw(Engine(Settings(models_dir=lora_dir, device="cpu")))


def test_save_writes_a_diffusers_file_and_a_kohya_file(lora_dir):
    folder = lora_dir / "Lora" / "with-te"
    assert sorted(p.name for p in folder.iterdir()) == ["pytorch_lora_weights.safetensors", "with-te.safetensors"]
    with safe_open(str(folder / "with-te.safetensors"), framework="pt") as f:
        keys, header = set(f.keys()), f.metadata()
        alpha = f.get_tensor("lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k.alpha")
    layer = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    assert {f"{layer}.lora_down.weight", f"{layer}.lora_up.weight", f"{layer}.alpha",
            "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"} <= keys
    assert all(k.startswith(("lora_unet_", "lora_te_")) for k in keys)
    assert alpha.item() == ALPHA
    assert header["base_model"] == "dreamloom-tiny-sd" and header["ss_network_dim"] == str(RANK)
    with safe_open(str(folder / "pytorch_lora_weights.safetensors"), framework="pt") as f:
        components = {key.split(".")[0] for key in list(f.keys())}
    assert components == {"unet", "text_encoder"}


def test_weight_scales_the_lora_and_the_next_request_gets_the_base_model_back(lora_engine, base):
    full = _draw(lora_engine, " <lora:unet-only:1>")
    off = _draw(lora_engine, " <lora:unet-only:0>")
    half = _draw(lora_engine, " <lora:unet-only:0.5>")
    assert _distance(full, base) > 2
    assert np.array_equal(off, base)
    assert 0 < _distance(half, base) < _distance(full, base) and _distance(half, full) < _distance(full, base)
    assert np.array_equal(_draw(lora_engine), base)


@pytest.mark.parametrize("name", ["unet-only", "with-te"])
def test_kohya_file_draws_what_the_diffusers_file_draws(lora_engine, base, name):
    from_folder = _draw(lora_engine, f" <lora:{name}>")
    from_kohya = _draw(lora_engine, loras=[LoraWeight(name=f"{name}-kohya")])
    assert _distance(from_folder, base) > 2
    assert np.abs(from_folder - from_kohya).max() <= 1


def test_a_lora_loads_once_and_again_when_its_file_is_rewritten(tmp_path):
    engine = Engine(Settings(models_dir=tmp_path, device="cpu"))
    files = save_lora_weights(tmp_path / "Lora" / "mine", _with_lora(False, seed=1).unet)
    first, again = _draw(engine, " <lora:mine>"), _draw(engine, " <lora:mine>")
    pipeline = engine.models.get(DEFAULT_MODEL).pipeline
    assert np.array_equal(first, again) and pipeline.get_list_adapters() == {"unet": ["lora_0"]}
    mtime = files.diffusers.stat().st_mtime_ns
    save_lora_weights(tmp_path / "Lora" / "mine", _with_lora(False, seed=2).unet)
    os.utime(files.diffusers, ns=(mtime + 10**9, mtime + 10**9))  # a new mtime even on a coarse clock
    assert _distance(_draw(engine, " <lora:mine>"), first) > 1
    assert pipeline.get_list_adapters() == {"unet": ["lora_1"]}


def test_parity_with_plain_diffusers(lora_engine, lora_dir):
    request = _request()
    pipeline = StableDiffusionPipeline.from_pretrained(TINY)
    pipeline.scheduler = EulerDiscreteScheduler.from_config(pipeline.scheduler.config)
    pipeline.set_progress_bar_config(disable=True)
    pipeline.load_lora_weights(lora_dir / "Lora" / "with-te")
    expected = pipeline(request.prompt, num_inference_steps=request.steps, guidance_scale=request.cfg_scale,
                        width=request.width, height=request.height,
                        generator=torch.Generator().manual_seed(request.seed)).images[0]
    assert np.abs(_draw(lora_engine, " <lora:with-te>") - _pixels(expected)).max() <= 1


def test_names_resolve_only_inside_the_lora_folders(lora_engine, lora_dir):
    inside = lora_dir / "Lora" / "unet-only"
    for name in ["../Lora/unet-only", str(inside), "Lora/unet-only", "unet-only/../with-te", "/etc/passwd"]:
        with pytest.raises(ValueError, match="not found"):
            lora_engine.generate(_request(f"x <lora:{name}>"))
    with pytest.raises(ValueError, match="available: unet-only, with-te, unet-only-kohya.safetensors"):
        lora_engine.generate(_request("x <lora:nope>"))
    assert lora_engine.models.registry.resolve_lora(str(inside), allow_paths=True).path == inside


def test_pickle_lora_is_refused_unless_allowed(lora_dir, tmp_path):
    folder = tmp_path / "models"
    shutil.copytree(lora_dir, folder)
    (folder / "Lora" / "old.pt").write_bytes(b"\x80\x04not really a LoRA")
    with pytest.raises(PickleRefused, match="--allow-pickle"):
        Engine(Settings(models_dir=folder, device="cpu")).generate(_request("x <lora:old>"))


def test_infotext_carries_the_lora_and_reads_back(lora_engine):
    from_prompt = lora_engine.generate(_request("a red circle <lora:unet-only:0.5>"))
    from_field = lora_engine.generate(_request("a red circle", loras=[LoraWeight(name="with-te", weight=0.7)]))
    text = from_prompt.infotexts[0]
    assert text.startswith("a red circle <lora:unet-only:0.5>\n")
    assert 'Lora hashes: "unet-only: ' in text
    assert from_field.infotexts[0].startswith("a red circle <lora:with-te:0.7>\n")
    for result in (from_prompt, from_field):
        back = request_from_infotext(result.infotexts[0])
        again = lora_engine.generate(back).images[0]
        assert np.array_equal(_pixels(again), _pixels(result.images[0]))


def test_prompt_syntax():
    assert split_lora_tags("a <lora:x:0.5>cat<lora:y>") == (
        "a cat", [LoraWeight(name="x", weight=0.5), LoraWeight(name="y", weight=1.0)])
    assert lora_weights("<lora:x:0.25> <lora:x:0.5>", [LoraWeight(name="x")]) == {"x": 1.75}
    for prompt, message in [("<lora:x:abc>", "valid number"), ("<lora:x:9>", "less than or equal to 4"),
                            ("<lora:x:1:2>", "name:weight"), ("<lora::1>", "name")]:
        with pytest.raises(ValueError, match=message):
            GenerationRequest(prompt=prompt)


def test_command_line_lora_option_and_models_listing(lora_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DREAMLOOM_MODELS_DIR", str(lora_dir))
    runner = CliRunner()
    run = runner.invoke(app, ["generate", "a red circle", "--lora", "unet-only:0.7", "--steps", "2", "--width", "32",
                              "--height", "32", "--device", "cpu", "--output-dir", str(tmp_path)])
    assert run.exit_code == 0, run.output
    assert "<lora:unet-only:0.7>" in Image.open(run.stdout.split()[0]).info["parameters"]
    bad = runner.invoke(app, ["generate", "x", "--lora", "unet-only:abc", "--output-dir", str(tmp_path)])
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "LoRA 'unet-only:abc': weight" in bad.stderr
    listing = runner.invoke(app, ["models"], terminal_width=200)
    assert "with-te-kohya.safetensors" in listing.stdout and " lora " in listing.stdout
    assert "single-file" not in listing.stdout  # the kohya files are not listed as models too
