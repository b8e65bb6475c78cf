"""Several txt2img requests in one forward pass: each gets its solo images, seeds and infotexts,
and its own progress, cancel and interrupt."""

import threading

import numpy as np
import pytest
from PIL import Image

from dreamloom.generate.batched import BatchMember, batch_key
from dreamloom.generate.request import GenerationRequest


def _request(**kw) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "a red circle", "model": "random-sd", "steps": 5, "seed": 10, **kw})


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def _assert_close(images: list[Image.Image], solo: list[Image.Image]) -> None:
    assert len(images) == len(solo)
    for image, alone in zip(images, solo):
        assert np.abs(_pixels(image) - _pixels(alone)).max() <= 2


def _stop_at_step(event_name: str, step: int = 2):
    """A member whose ``event_name`` event its own progress callback sets at ``step`` of its first batch."""
    event, reports = threading.Event(), []

    def progress(report):
        reports.append(report)
        if (report.batch, report.step) == (0, step):
            event.set()

    return {"progress": progress, event_name: event}, reports


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M SDE Karras", "DPM++ SDE Karras"])
def test_members_get_their_solo_images_seeds_and_infotexts(engine, sampler):
    requests = [
        _request(sampler=sampler, negative_prompt="blue", batch_size=2),
        _request(sampler=sampler, prompt="a green square", seed=3, clip_skip=2, n_iter=2),
        _request(sampler=sampler, prompt="a yellow star", seed=-1, negative_prompt="dark"),
        _request(sampler=sampler, prompt=" ".join(["red circle"] * 40), seed=7),  # two token windows
    ]
    results = engine.generate_batch([BatchMember(r) for r in requests])
    assert [r.seeds for r in results[:2]] + [results[3].seeds] == [[10, 11], [3, 4], [7]]
    for request, result in zip(requests, results):
        assert result.request is request
        solo = engine.generate(request.model_copy(update={"seed": result.seeds[0]}))
        assert result.infotexts == solo.infotexts
        _assert_close(result.images, solo.images)
    assert "Negative prompt: blue" in results[0].infotexts[1] and "Seed: 11" in results[0].infotexts[1]


def test_batch_key_groups_compatible_requests():
    base = batch_key(_request())
    assert base is not None
    assert batch_key(_request(prompt="a blue square", negative_prompt="red", seed=4, batch_size=3, clip_skip=2)) == base
    for change in [{"steps": 6}, {"width": 128}, {"height": 128}, {"sampler": "Euler"}, {"cfg_scale": 5},
                   {"model": "other"}, {"prompt": "a red circle <lora:star:0.5>"}]:
        assert batch_key(_request(**change)) != base, change
    with_lora = batch_key(_request(prompt="a red circle <lora:star:0.5>"))
    assert batch_key(_request(prompt="a cat", loras=[{"name": "star", "weight": 0.5}])) == with_lora
    assert batch_key(_request(prompt="a cat", loras=[{"name": "star", "weight": 0.8}])) != with_lora
    assert batch_key(_request(init_image=Image.new("RGB", (64, 64)))) is None
    assert batch_key(_request(sampler="DPM++ SDE")) not in (None, base)  # one Brownian tree per image: it batches


def test_cancelled_member_is_dropped_and_the_others_run_on(engine):
    requests = [_request(), _request(prompt="a green square", seed=3), _request(prompt="a blue star", seed=5)]
    hooks, reports = _stop_at_step("cancel")
    members = [BatchMember(requests[0]), BatchMember(requests[1], **hooks), BatchMember(requests[2])]
    results = engine.generate_batch(members)
    assert results[1] is None and [r.step for r in reports] == [1, 2]
    for i in (0, 2):
        _assert_close(results[i].images, engine.generate(requests[i]).images)


def test_interrupted_member_keeps_its_partial_images(engine):
    requests = [_request(prompt="a green square", seed=3), _request(batch_size=2, n_iter=2)]
    hooks, reports = _stop_at_step("interrupt")
    results = engine.generate_batch([BatchMember(requests[0]), BatchMember(requests[1], **hooks)])
    interrupted, solo = results[1], engine.generate(requests[1])
    assert interrupted.extra["interrupted"] is True and interrupted.seeds == [10, 11]  # its second batch never ran
    assert [r.step for r in reports] == [1, 2]
    for partial, full in zip(interrupted.images, solo.images):
        assert np.abs(_pixels(partial) - _pixels(full)).mean() > 1
    _assert_close(results[0].images, engine.generate(requests[0]).images)
    assert "interrupted" not in results[0].extra


def test_skip_cuts_one_batch_short_and_runs_the_next(engine):
    request = _request(n_iter=2)
    hooks, reports = _stop_at_step("skip")
    (result,) = engine.generate_batch([BatchMember(request, **hooks)])
    assert [(r.batch, r.step) for r in reports] == [(0, 1), (0, 2)] + [(1, s) for s in range(1, 6)]
    solo = engine.generate(request).images
    assert result.seeds == [10, 11] and not hooks["skip"].is_set() and "interrupted" not in result.extra
    assert np.abs(_pixels(result.images[0]) - _pixels(solo[0])).mean() > 1
    _assert_close(result.images[1:], solo[1:])


def test_every_member_reports_every_step_with_its_own_previews(engine):
    reports: list[list] = [[], []]
    members = [BatchMember(_request(batch_size=2), progress=reports[0].append),
               BatchMember(_request(seed=3, n_iter=2), progress=reports[1].append)]
    engine.generate_batch(members, preview_every=2)
    assert [(r.batch, r.step, r.total) for r in reports[0]] == [(0, s, 5) for s in range(1, 6)]
    assert [(r.batch, r.step, r.batches) for r in reports[1]] == [(b, s, 2) for b in range(2) for s in range(1, 6)]
    assert len(reports[0][1].preview) == 2 and len(reports[1][1].preview) == 1
    assert reports[1][1].preview[0].size == (64, 64) and reports[0][0].preview is None


def test_incompatible_members_are_refused(engine):
    with pytest.raises(ValueError, match="batch_key"):
        engine.generate_batch([BatchMember(_request()), BatchMember(_request(steps=6))])
    assert engine.generate_batch([]) == []
