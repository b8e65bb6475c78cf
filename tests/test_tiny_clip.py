"""dreamloom-tiny-clip: the shipped model loads offline and measures what CLIP-I needs; the recipe runs."""

import json

import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor

from dreamloom.eval.clip_embedding import EMBEDDED_CLIP, clip_i, load_clip, pixel_values
from dreamloom.eval.prompts import held_out_scenes
from dreamloom.models.registry import embedded_models_dir
from dreamloom.shapeworld import render
from dreamloom.train.tiny_clip import load_config, position_invariance, retrieval_accuracy, run_recipe

#: About half the top-1 accuracy measured on 50 held-out scenes a group (0.98 in every group
#: and both directions); chance is about 0.02.
RETRIEVAL_FLOOR = 0.45


@pytest.fixture(scope="module")
def embedder():
    return load_clip()


def test_shipped_model_embeds_images_and_texts_as_unit_vectors(embedder):
    images = [render(s) for s in held_out_scenes(3, 1)]
    image_embeddings = embedder.image_embeddings(images)
    text_embeddings = embedder.text_embeddings(["a small red circle on a blue background", "a large star"])
    dim = embedder.model.config.projection_dim
    assert image_embeddings.shape == (3, dim) and text_embeddings.shape == (2, dim)
    assert torch.allclose(image_embeddings.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(text_embeddings.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_preprocessing_matches_transformers_clip_image_processor():
    """The torchvision-free preprocessing equals CLIPImageProcessor's, read from the shipped folder."""
    processor = CLIPImageProcessor.from_pretrained(embedded_models_dir() / EMBEDDED_CLIP)
    image = render(held_out_scenes(1, 2)[0]).resize((120, 90), Image.Resampling.NEAREST)  # landscape: resize + crop
    expected = processor(images=[image], return_tensors="pt").pixel_values
    assert torch.allclose(pixel_values([image], 64), expected, atol=1e-4)


@pytest.mark.parametrize("n_objects", [1, 2, 3])
def test_held_out_retrieval_far_above_chance(embedder, n_objects):
    accuracy = retrieval_accuracy(embedder, held_out_scenes(50, n_objects))
    assert min(accuracy.values()) > RETRIEVAL_FLOOR, accuracy


def test_clip_i_of_a_set_with_itself_beats_other_scenes(embedder):
    subject = embedder.image_embeddings([render(s) for s in held_out_scenes(4, 1)])
    others = embedder.image_embeddings([render(s) for s in held_out_scenes(8, 2)[4:]])
    assert clip_i(subject, subject) > clip_i(subject, others)
    with pytest.raises(ValueError):
        clip_i(subject, subject[:0])


def test_same_object_moved_is_closer_than_another_colour_or_shape(embedder):
    report = position_invariance(embedder, count=30)
    assert report["same_object_moved"] > report["other_colour_moved"]
    assert report["same_object_moved"] > report["other_shape_moved"]


def test_recipe_runs_end_to_end_resumes_and_writes_a_loadable_model(tmp_path):
    overrides = [f"output_dir={tmp_path}", "steps=3", "batch_size=8", "data.train_scenes=32", "checkpoint_every=1",
                 "eval_every=2", "eval_scenes=4", "vision.hidden_size=32", "vision.num_hidden_layers=1",
                 "text.hidden_size=32", "text.num_hidden_layers=1", "projection_dim=16"]
    folder = run_recipe(load_config(None, overrides))
    clip = load_clip(str(folder))
    assert clip.image_embeddings([render(held_out_scenes(1, 1)[0])]).shape == (1, 16)
    assert json.loads((tmp_path / "report.json").read_text())["steps"] == 3
    assert (tmp_path / "clip" / "loss.png").exists() and (tmp_path / "clip" / "retrieval_curve.png").exists()
    # more steps continue from the last checkpoint rather than starting over
    run_recipe(load_config(None, [*overrides, "steps=4"]))
    curve = [json.loads(line) for line in (tmp_path / "clip" / "retrieval_curve.jsonl").read_text().splitlines()]
    assert [row["step"] for row in curve] == [2, 3, 4]
