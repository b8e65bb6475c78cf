"""The vision engine: the local backend on a random tiny Llama 4 built in code (shapes, types,
determinism, errors), captioning folders, judging, enhancing; and on the shipped
dreamloom-tiny-vlm, real answers about ShapeWorld images."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import Llama4ForConditionalGeneration
from typer.testing import CliRunner

from dreamloom.config import Settings
from dreamloom.generate.infotext import parse_infotext
from dreamloom.shapeworld import parse_prompt, render, sample_scenes
from dreamloom.shapeworld.subjects import instance_dir
from dreamloom.shapeworld.vocab import OBJECT_COLOURS
from dreamloom.vision.backends import EmptyAnswer, GenerationOptions
from dreamloom.vision.captioning import insert_token
from dreamloom.vision.judge import answer_passes, judge, questions_for
from dreamloom.vision.local import LocalBackend
from dreamloom.vision.images import to_data_url
from dreamloom.vision.messages import MessageError, parse_messages, trained_order
from dreamloom.vision.registry import resolve_vision_model, vision_models
from dreamloom.vision.service import VisionConfig, VisionService, open_backend
from dreamloom.vision.tiny_vlm.config import TinyVlmConfig, llama4_config
from dreamloom.vision.tiny_vlm.folder import embedded_vlm_path, write_model_folder
from dreamloom.vision.tiny_vlm.recipe import build_processor

torch.set_num_threads(1)  # a tiny model: one thread beats two, and never fights a busy neighbour
SHIPPED = (embedded_vlm_path() / "config.json").exists()
needs_shipped = pytest.mark.skipif(not SHIPPED, reason="dreamloom-tiny-vlm is not shipped yet")
RED = Image.new("RGB", (64, 64), (220, 30, 30))


def write_random_vlm(folder: Path) -> Path:
    """A seeded, untrained Llama 4 of the tiny model's architecture (MoE text model, pixel-shuffle
    vision encoder) with its processor, saved as a model folder. It never writes a special token
    (their logits are 0, below some word's), so every answer is words up to ``max_new_tokens``."""
    cfg = TinyVlmConfig()
    processor = build_processor(cfg)
    torch.manual_seed(0)
    model = Llama4ForConditionalGeneration(llama4_config(cfg, processor.tokenizer))
    with torch.no_grad():
        model.language_model.lm_head.weight[processor.tokenizer.all_special_ids] = 0.0
    folder.mkdir(parents=True, exist_ok=True)
    return write_model_folder(model, processor, folder)


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory) -> Path:
    """A models folder holding a random tiny Llama 4 called "random-vlm"."""
    root = tmp_path_factory.mktemp("vlm-models")
    write_random_vlm(root / "random-vlm")
    return root


@pytest.fixture(scope="module")
def backend(vlm_dir) -> LocalBackend:
    settings = Settings(models_dir=vlm_dir, device="cpu")
    return open_backend(VisionConfig(model="random-vlm", max_new_tokens=6), settings)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> LocalBackend:
    """The embedded model, with an empty models folder beside it."""
    return open_backend(VisionConfig(), Settings(models_dir=tmp_path_factory.mktemp("no-models"), device="cpu"))


def huge_png(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (its pixels are never there)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def test_registry_lists_vision_models_only(vlm_dir, models_dir):
    names = [entry.name for entry in vision_models(vlm_dir)]
    assert "random-vlm" in names and "dreamloom-tiny-clip" not in names and "dreamloom-tiny-sd" not in names
    assert "random-sd" not in [entry.name for entry in vision_models(models_dir)]
    with pytest.raises(ValueError, match="not found; available: .*random-vlm"):
        resolve_vision_model(str(vlm_dir / "random-vlm"), vlm_dir)  # a request cannot name a path
    assert resolve_vision_model(str(vlm_dir / "random-vlm"), vlm_dir, allow_paths=True).name == "random-vlm"
    with pytest.raises(ValueError, match="not a transformers image-text-to-text"):
        resolve_vision_model(str(models_dir / "random-sd"), vlm_dir, allow_paths=True)


def test_local_backend_answers_with_strings_and_token_counts(backend):
    caption, answer = backend.caption(RED), backend.ask(RED, "What colour is the circle?")
    assert isinstance(caption, str) and isinstance(answer, str)
    assert backend.caption(RED) == caption  # greedy: repeatable
    messages = parse_messages([{"role": "user", "content": [{"type": "image", "image": RED},
                                                            {"type": "text", "text": "What colour is the background?"}]}])
    whole = backend.complete(messages, GenerationOptions(max_new_tokens=5))
    assert whole.text  # the random model's answer, any words
    assert 16 < whole.prompt_tokens < 64 and 1 <= whole.completion_tokens <= 5
    assert whole.finish_reason == "length" and whole.completion_tokens == 5
    stream = backend.chat(messages, stream=True, options=GenerationOptions(max_new_tokens=5))
    pieces = list(stream)
    assert len(pieces) > 1 and all(isinstance(p, str) for p in pieces)
    assert "".join(pieces).strip() == whole.text and stream.completion == whole
    text_only = backend.complete(parse_messages([{"role": "system", "content": "Be brief."},
                                                 {"role": "user", "content": "What colour is the background?"}]))
    assert text_only.prompt_tokens < whole.prompt_tokens  # no image tokens
    enhanced = backend.enhance("a red circle")
    assert enhanced.startswith("a red circle")


def test_bad_input_is_refused_naming_the_cause(backend, tmp_path):
    with pytest.raises(ValueError, match="question is empty"):
        backend.ask(RED, "  ")
    with pytest.raises(ValueError, match="not an image"):
        backend.ask(b"plain text, not a picture", "What is it?")
    (tmp_path / "notes.png").write_text("not a png")
    with pytest.raises(ValueError, match="notes.png is not an image"):
        backend.caption(tmp_path / "notes.png")
    with pytest.raises(FileNotFoundError, match="no such image"):
        backend.caption(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="7000x7000 = 49.0 MP, over the limit of 40 MP"):
        backend.caption(huge_png(7000, 7000))
    with pytest.raises(ValueError, match="over the limit of 40 MP"):
        backend.caption(huge_png(20000, 20000))
    with pytest.raises(MessageError, match="data:image") as refused:
        backend.chat([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.org/a.png"}}]}])
    assert refused.value.loc == ("messages", 0, "content", 0, "image_url", "url")
    with pytest.raises(MessageError, match="no user message"):
        backend.chat([{"role": "system", "content": "Be brief."}])
    with pytest.raises(MessageError, match="unsupported role 'tool'"):
        backend.chat([{"role": "tool", "content": "x"}])
    with pytest.raises(ValueError, match="remote backend needs the endpoint's URL"):
        open_backend(VisionConfig(backend="remote"), Settings())


def test_one_image_goes_before_the_text_and_text_parts_are_joined():
    blue = Image.new("RGB", (64, 64), (30, 80, 230))
    assert trained_order(["What colour is ", "the circle?", RED]) == [RED, "What colour is\nthe circle?"]
    assert trained_order([RED, "Describe the image."]) == [RED, "Describe the image."]
    assert trained_order(["Describe the image."]) == ["Describe the image."]
    interleaved = ["The first:", RED, "the second:", blue, "Which is red?"]
    assert trained_order(interleaved) == interleaved  # several images keep their places among the words


def test_service_loads_each_model_once_and_only_by_name(vlm_dir):
    loads = []

    def loader(entry, settings):
        loads.append(entry.name)
        return entry.name

    service = VisionService(Settings(models_dir=vlm_dir), loader=loader, default="random-vlm")
    assert service.backend() == service.backend("random-vlm") == "random-vlm" and loads == ["random-vlm"]
    with pytest.raises(ValueError, match="vision model 'nope' not found"):
        service.backend("nope")


def test_token_goes_before_the_class_noun():
    assert insert_token("a large red star on a blue background", "sks", "star") == \
        "a large red sks star on a blue background"
    assert insert_token("a red circle", "sks", "star") == "sks star, a red circle"


def test_caption_folder_from_the_command_line(vlm_dir, tmp_path):
    from dreamloom.cli.main import app

    for i, colour in enumerate(((220, 30, 30), (30, 80, 230), (30, 170, 60))):
        Image.new("RGB", (64, 64), colour).save(tmp_path / f"{i:02d}.png")
    (tmp_path / "02.txt").write_text("kept\n")
    args = ["caption", str(tmp_path), "--model", "random-vlm", "--models-dir", str(vlm_dir), "--max-new-tokens", "4",
            "--token", "sks", "--class-noun", "star"]
    run = CliRunner().invoke(app, args)
    assert run.exit_code == 0, run.output
    assert "wrote 2 captions" in run.output and "kept 1 existing" in run.output
    assert (tmp_path / "02.txt").read_text() == "kept\n"
    assert all("sks star" in (tmp_path / f"{i:02d}.txt").read_text() for i in (0, 1))
    run = CliRunner().invoke(app, [*args, "--overwrite"])
    assert run.exit_code == 0 and "sks star" in (tmp_path / "02.txt").read_text()
    refused = CliRunner().invoke(app, ["caption", str(tmp_path), "--token", "sks"])
    assert refused.exit_code == 2 and "--class-noun" in refused.output and "Traceback" not in refused.output
    (tmp_path / "00.jpg").write_bytes((tmp_path / "00.png").read_bytes())
    clash = CliRunner().invoke(app, ["caption", str(tmp_path), "--model", "random-vlm", "--models-dir", str(vlm_dir)])
    assert clash.exit_code == 2 and "00.jpg and 00.png would both be captioned in 00.txt" in clash.output.replace("\n", " ")


def test_ask_and_judge_from_the_command_line(vlm_dir, tmp_path):
    from dreamloom.cli.main import app

    RED.save(tmp_path / "red.png")
    model = ["--model", "random-vlm", "--models-dir", str(vlm_dir), "--max-new-tokens", "3"]
    asked = CliRunner().invoke(app, ["ask", str(tmp_path / "red.png"), "What colour is the circle?", *model])
    assert asked.exit_code == 0, asked.output
    judged = CliRunner().invoke(app, ["judge", str(tmp_path / "red.png"), "a large red circle on a white background",
                                      *model, "--json", str(tmp_path / "judge.json")])
    assert judged.exit_code == 0, judged.output
    assert "VQA adherence" in judged.output and "agreement with it" in judged.output
    missing = CliRunner().invoke(app, ["ask", str(tmp_path / "nope.png"), "What?", *model])
    assert missing.exit_code == 2 and "no such image" in missing.output


def test_judge_questions_follow_the_scorer_checks():
    questions = questions_for("a small red circle to the left of a large blue square on a yellow background")
    assert [q.check for q in questions] == ["object0.colour", "object0.shape", "object0.size", "object1.colour",
                                            "object1.shape", "object1.size", "background", "relation", "count"]
    assert questions[0].text == "What colour is the circle?" and questions[0].accepted == ("red",)
    assert questions[7].text == "Is the circle left of the square?"
    twins = questions_for("a red circle and a blue circle")
    assert twins[0].text == "Is there a red circle?" and twins[1].text == "What shape is the red object?"
    assert questions_for("a cat on a sofa")[0].check == "prompt"
    assert answer_passes("It is red.", ("red",)) and not answer_passes("no, red", ("yes",))
    assert answer_passes("2", ("two",)) and not answer_passes("reddish", ("red",))


def test_judge_reports_agreement_with_the_exact_scorer(backend):
    scene = sample_scenes(seed=3, count=1, n_objects=2)[0]
    result = judge(backend, render(scene), scene.caption())
    assert set(result.verdicts) <= set(result.exact) and 0.0 <= result.agreement <= 1.0
    assert result.exact_score == 1.0  # the scorer reads its own renders exactly
    assert result.to_dict()["score"] == result.score


def test_generate_enhance_records_the_prompt_as_written(vlm_dir, tmp_path):
    from dreamloom.cli.main import app

    models = tmp_path / "models"
    models.mkdir()
    # under the default vision model's name; once the real one ships, the embedded model comes first
    (models / "dreamloom-tiny-vlm").symlink_to(vlm_dir / "random-vlm")
    run = CliRunner().invoke(app, ["generate", "a red circle", "--enhance", "--steps", "2", "--models-dir", str(models),
                                   "--output-dir", str(tmp_path / "out"), "--device", "cpu"])
    assert run.exit_code == 0, run.output
    (path,) = (tmp_path / "out").glob("*.png")
    fields = parse_infotext(Image.open(path).info["parameters"])
    assert fields["Enhanced from"] == "a red circle" and fields["Prompt"].startswith("a red circle ")
    assert f"enhanced prompt: {fields['Prompt']}" in " ".join(run.output.split())


@needs_shipped
def test_shipped_model_reads_shapeworld(shipped):
    """Real answers: colour words for colours, a background read right, captions in ShapeWorld's grammar."""
    scenes = sample_scenes(seed=11, count=6, n_objects=1)
    backgrounds = 0
    for scene in scenes:
        image, (obj,) = render(scene), scene.objects
        assert shipped.ask(image, f"What colour is the {obj.shape}?") in OBJECT_COLOURS
        backgrounds += shipped.ask(image, "What colour is the background?") == scene.background
        assert parse_prompt(shipped.caption(image)).objects
    assert backgrounds >= 5


@needs_shipped
def test_shipped_model_judges_like_the_exact_scorer(shipped):
    agreements = [judge(shipped, render(scene), scene.caption()).agreement
                  for scene in sample_scenes(seed=5, count=4, n_objects=2)]
    assert sum(agreements) / len(agreements) >= 0.5  # an untrained model agrees on about one check in twenty


@needs_shipped
def test_shipped_model_captions_a_dreambooth_folder(tmp_path):
    from dreamloom.cli.main import app

    for image in sorted(instance_dir("striped-star").glob("*.png")):
        (tmp_path / image.name).write_bytes(image.read_bytes())
    run = CliRunner().invoke(app, ["caption", str(tmp_path), "--token", "sks", "--class-noun", "star"])
    assert run.exit_code == 0, run.output
    captions = [path.read_text().strip() for path in sorted(tmp_path.glob("*.txt"))]
    assert len(captions) == 5 and all("sks " in text and parse_prompt(text).objects for text in captions)


def user_message(*parts: str | Image.Image) -> list[dict]:
    """An OpenAI-style user message, images as inline data: URLs (what the HTTP API receives)."""
    content = [{"type": "image_url", "image_url": {"url": to_data_url(p)}} if isinstance(p, Image.Image)
               else {"type": "text", "text": p} for p in parts]
    return [{"role": "user", "content": content}]


@needs_shipped
def test_shipped_model_answers_whatever_order_the_parts_come_in(shipped):
    """Text first (as OpenAI clients send it), image first, the question in two parts: one right answer."""
    for scene in sample_scenes(seed=13, count=4, n_objects=2):
        image, obj = render(scene), scene.objects[0]
        if sum(o.shape == obj.shape for o in scene.objects) > 1:
            continue
        question = f"What colour is the {obj.shape}?"
        orders = [(question, image), (image, question), ("What colour is", f"the {obj.shape}?", image)]
        assert {shipped.chat(user_message(*parts)) for parts in orders} == {obj.colour}, scene


@needs_shipped
def test_shipped_model_understands_how_users_word_questions(shipped):
    for scene in sample_scenes(seed=17, count=3, n_objects=1):
        image, (obj,) = render(scene), scene.objects
        assert shipped.chat(user_message(f"what color is the {obj.shape}", image)) == obj.colour
        assert shipped.chat(user_message("WHAT SHAPE IS IT", image)) == obj.shape
        assert shipped.chat(user_message("How many shapes are there", image)) == "one"
        described = parse_prompt(shipped.chat(user_message("What is in this image?", image))).objects
        assert [(o.shape, o.colour) for o in described] == [(obj.shape, obj.colour)]


@needs_shipped
def test_an_answer_without_text_is_a_typed_error_not_an_empty_string():
    """A real generation that writes no word: with every output logit 0, greedy decoding picks
    token 0, ``<|begin_of_text|>``, a special token the decoded text leaves out."""
    mute = LocalBackend.load(embedded_vlm_path(), device="cpu")
    with torch.no_grad():
        mute.model.language_model.lm_head.weight.zero_()
    messages = parse_messages(user_message("What colour is the circle?", RED))
    with pytest.raises(EmptyAnswer, match="gave an empty answer: max_new_tokens=3 ran out before any text") as raised:
        mute.complete(messages, GenerationOptions(max_new_tokens=3))
    assert raised.value.completion.completion_tokens == 3 and raised.value.completion.finish_reason == "length"
    stream = mute.stream(messages, GenerationOptions(max_new_tokens=3))
    with pytest.raises(EmptyAnswer):
        list(stream)
    assert mute.enhance("a red circle") == "a red circle"
