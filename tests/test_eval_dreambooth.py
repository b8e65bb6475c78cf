"""The DreamBooth evaluation on exact pictures: a perfect personalized model, a model that
never learned the subject, and one whose class prior drifted to the subject."""

from __future__ import annotations

import pytest
import torch

from dreamloom.eval.clip_embedding import load_clip
from dreamloom.eval.dreambooth import diversity, evaluate_dreambooth
from dreamloom.shapeworld.subjects import Subject, context_prompts, get_subject, render_context

STAR = get_subject("striped-star")


@pytest.fixture(scope="module")
def clip():
    return load_clip()


def picture_sampler(subject_for_identifier: bool, subject_for_class: bool):
    """A ``SampleFn`` that draws each context exactly, with the subject or a plain yellow
    star of the class in its place."""
    contexts = {c.prompt: c for c in context_prompts(STAR)} | {c.class_prompt: c for c in context_prompts(STAR)}
    plain = Subject(name="plain", class_noun="star", description="one colour", colours=("yellow", "yellow"),
                    pattern="stripes")

    def sample(prompt: str, count: int):
        context = contexts[prompt]
        with_subject = subject_for_identifier if "sks" in prompt else subject_for_class
        return [render_context(STAR if with_subject else plain, context)] * count

    return sample


def test_diversity_is_zero_for_copies_and_one_for_orthogonal_embeddings():
    assert diversity(torch.tensor([[1.0, 0.0], [1.0, 0.0]])) == pytest.approx(0.0)
    assert diversity(torch.eye(3)) == pytest.approx(1.0)


def test_a_perfect_model_scores_full_fidelity_and_no_drift(clip):
    report = evaluate_dreambooth(picture_sampler(True, False), STAR, clip, samples=2)
    assert report["prompts"] == 18
    assert report["subject_fidelity"]["detected"] == 1.0
    assert report["prompt_fidelity"]["context"] == 1.0
    assert report["pres"]["detected"] == 0.0
    assert report["subject_fidelity"]["clip_i"] > report["pres"]["clip_i"]
    assert report["div"] == pytest.approx(0.0, abs=1e-6)  # every sample identical


def test_an_unlearned_subject_and_a_drifted_prior_show_in_the_numbers(clip):
    perfect = evaluate_dreambooth(picture_sampler(True, False), STAR, clip, samples=2)
    unlearned = evaluate_dreambooth(picture_sampler(False, False), STAR, clip, samples=2)
    drifted = evaluate_dreambooth(picture_sampler(True, True), STAR, clip, samples=2)
    assert unlearned["subject_fidelity"]["detected"] == 0.0
    assert unlearned["subject_fidelity"]["clip_i"] < perfect["subject_fidelity"]["clip_i"]
    assert unlearned["prompt_fidelity"]["checks"]["background"] == 1.0  # the context is still right
    assert drifted["pres"]["detected"] == 1.0 and drifted["pres"]["clip_i"] > perfect["pres"]["clip_i"]
