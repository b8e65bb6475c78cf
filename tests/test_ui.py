"""The web UI in a real browser: headless Chromium (Debian's package) driven by Playwright,
against a real ``dreamloom serve`` app on 127.0.0.1. Screenshots of every tab are written
to ``test-artifacts/ui/`` (or ``$DREAMLOOM_TEST_ARTIFACTS``)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import live_server
from PIL import Image

from dreamloom.generate.infotext import png_bytes, read_infotext
from dreamloom.shapeworld import parse_prompt, render, sample_scenes

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("DREAMLOOM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("DREAMLOOM_TEST_ARTIFACTS", "test-artifacts")) / "ui"
TIMEOUT_MS = 120_000

if CHROMIUM is None:
    if os.environ.get("CI"):
        raise RuntimeError("CI needs Debian's chromium for the browser tests (.ci/run installs it)")
    pytest.skip("no chromium on this machine: apt-get install chromium", allow_module_level=True)


@pytest.fixture(scope="module")
def ui_data(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ui-server")


@pytest.fixture(scope="module")
def ui_url(ui_data) -> Iterator[str]:
    with live_server(ui_data, ui_data / "models", preview_every=1) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, ui_url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(ui_url)
    page.wait_for_selector("#txt2img-prompt textarea")
    yield page
    context.close()


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def bar(page, prefix: str) -> dict:
    """The progress bar's data attributes: job, state, step, total."""
    element = page.query_selector(f"#{prefix}-progress .dl-progress")
    return {key: element.get_attribute(f"data-{key}") for key in ("job", "state", "step", "total")}


def wait_state(page, prefix: str, state: str, job: str | None = None) -> dict:
    selector = f'#{prefix}-progress .dl-progress[data-state="{state}"]'
    if job:
        selector += f'[data-job="{job}"]'
    page.wait_for_selector(selector)
    return bar(page, prefix)


def set_number(page, element_id: str, value) -> None:
    """Type into a slider's or number box's input, as a person does."""
    box = page.locator(f"#{element_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")


def api(url: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_generate_shows_progress_previews_and_the_png_with_its_infotext(page, ui_data):
    prompt = "a large red circle on a yellow background"
    page.fill("#txt2img-prompt textarea", prompt)
    set_number(page, "txt2img-steps", 40)
    set_number(page, "txt2img-seed", 1234)
    page.click("#txt2img-generate")
    steps_seen = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        element = page.query_selector("#txt2img-progress .dl-progress")
        state, step = element.get_attribute("data-state"), int(element.get_attribute("data-step"))
        if state == "running":
            steps_seen.add(step)
        if state == "done":
            break
        time.sleep(0.05)
    assert len([s for s in steps_seen if 0 < s < 40]) >= 3, f"the bar did not move: {sorted(steps_seen)}"
    assert page.locator("#txt2img-preview img").count() == 1  # a step preview was shown
    page.wait_for_selector("#txt2img-gallery img")
    job = bar(page, "txt2img")["job"]
    files = sorted((ui_data / "jobs" / job).glob("*.png"))
    assert len(files) == 1
    infotext = read_infotext(files[0])
    assert infotext.startswith(prompt) and "Seed: 1234" in infotext and "Steps: 40" in infotext
    assert page.input_value("#txt2img-info textarea") == infotext
    screenshot(page, "txt2img")

    page.click("#txt2img-send")  # on to img2img / inpaint, with the image in the editor
    page.wait_for_selector('[role=tab][aria-selected="true"] >> text=Image to image / Inpaint')
    page.wait_for_selector("#img2img-editor canvas")
    page.wait_for_selector("#img2img-editor >> text=Upload an image", state="hidden")


def test_draw_a_mask_and_inpaint(page, ui_data, tmp_path):
    scene = sample_scenes(seed=5, count=1)[0]
    init = render(scene)
    init.save(tmp_path / "init.png")
    open_tab(page, "Image to image / Inpaint")
    page.wait_for_selector("#img2img-editor canvas")
    page.set_input_files("#img2img-editor input[type=file]", str(tmp_path / "init.png"))
    page.wait_for_selector("#img2img-editor >> text=Upload an image", state="hidden")
    box = page.locator("#img2img-editor canvas").first.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 60, y, steps=4)
    page.mouse.down()
    for i in range(1, 13):  # a horizontal stroke through the middle of the image
        page.mouse.move(x - 60 + 10 * i, y, steps=2)
    page.mouse.up()
    page.fill("#img2img-prompt textarea", "a small blue star on a white background")
    set_number(page, "img2img-mask-blur", 0)
    page.click("#img2img-generate")
    done = wait_state(page, "img2img", "done")
    page.wait_for_selector("#img2img-gallery img")
    screenshot(page, "img2img-inpaint")

    folder = ui_data / "jobs" / done["job"]
    mask = np.asarray(Image.open(folder / "inputs" / "mask.png").convert("L")) > 127
    rows, cols = np.nonzero(mask)
    assert 0.05 < mask.mean() < 0.7, "the painted stroke is the mask"
    assert rows.max() - rows.min() < cols.max() - cols.min(), "a horizontal stroke makes a wide mask"
    result = np.asarray(Image.open(next(folder.glob("*.png"))).convert("RGB")).astype(int)
    original = np.asarray(init.convert("RGB")).astype(int)
    assert (result[~mask] == original[~mask]).all(), "pixels outside the mask are the original's"
    assert np.abs(result[mask] - original[mask]).mean() > 1, "the masked pixels were redrawn"


def test_gallery_click_and_a_dropped_png_restore_the_form(page, ui_url, tmp_path):
    job = api(ui_url, "/api/v1/jobs", {"prompt": "a small green square on a black background", "seed": 4242,
                                       "steps": 7, "cfg_scale": 5.5, "sampler": "Euler a"})
    deadline = time.monotonic() + 120
    while api(ui_url, f"/api/v1/jobs/{job['id']}")["state"] != "done" and time.monotonic() < deadline:
        time.sleep(0.2)
    open_tab(page, "Gallery & history")
    page.click("#history-refresh")
    page.wait_for_selector("#history-gallery img")
    screenshot(page, "history")
    page.locator("#history-gallery img").first.click()  # newest first: the job above
    page.wait_for_function("document.querySelector('#history-info textarea').value.includes('4242')")
    open_tab(page, "Text to image")
    assert page.input_value("#txt2img-prompt textarea") == "a small green square on a black background"
    assert page.input_value("#txt2img-seed input") == "4242"
    assert page.input_value("#txt2img-steps input[type=number]") == "7"
    assert page.input_value("#txt2img-cfg input[type=number]") == "5.5"

    a1111 = ("a large purple triangle on a white background\nNegative prompt: blurry\n"
             "Steps: 12, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6, Seed: 777, Size: 64x64, "
             "Model hash: 0123456789, Model: dreamloom-tiny-sd, Version: v1.10.1")
    (tmp_path / "from-a1111.png").write_bytes(png_bytes(Image.new("RGB", (64, 64)), a1111))
    open_tab(page, "Gallery & history")
    page.set_input_files("#png-drop input[type=file]", str(tmp_path / "from-a1111.png"))
    page.wait_for_function("document.querySelector('#txt2img-seed input').value === '777'")
    assert page.input_value("#txt2img-prompt textarea") == "a large purple triangle on a white background"
    assert page.input_value("#txt2img-negative textarea") == "blurry"
    assert page.input_value("#txt2img-steps input[type=number]") == "12"


def test_cancel_stops_this_job_only(page, ui_url):
    other = api(ui_url, "/api/v1/jobs", {"prompt": "a small red star on a blue background", "steps": 30,
                                         "sampler": "Euler"})  # a different batch: runs on its own
    page.fill("#txt2img-prompt textarea", "a large yellow circle on a black background")
    set_number(page, "txt2img-steps", 150)
    set_number(page, "txt2img-n-iter", 4)
    page.click("#txt2img-generate")
    running = wait_state(page, "txt2img", "running")
    page.wait_for_function("Number(document.querySelector('#txt2img-progress .dl-progress').dataset.step) > 2")
    page.click("#txt2img-cancel")
    cancelled = wait_state(page, "txt2img", "cancelled", running["job"])
    assert int(cancelled["step"]) < 600
    deadline = time.monotonic() + 120
    while (state := api(ui_url, f"/api/v1/jobs/{other['id']}")["state"]) not in ("done", "failed", "cancelled"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert state == "done", "the other caller's job was not cancelled"
    assert api(ui_url, f"/api/v1/jobs/{running['job']}")["state"] == "cancelled"


def test_a_reloaded_page_follows_its_running_job(page):
    page.fill("#txt2img-prompt textarea", "a small white square on a green background")
    set_number(page, "txt2img-steps", 150)
    set_number(page, "txt2img-n-iter", 2)
    page.click("#txt2img-generate")
    running = wait_state(page, "txt2img", "running")
    page.reload()
    page.wait_for_selector("#txt2img-prompt textarea")
    after = wait_state(page, "txt2img", "running", running["job"])
    page.wait_for_function(f"Number(document.querySelector('#txt2img-progress .dl-progress').dataset.step) > "
                           f"{int(after['step']) + 3}")
    wait_state(page, "txt2img", "done", running["job"])
    page.wait_for_selector("#txt2img-gallery img")
    assert "Steps: 150" in page.input_value("#txt2img-info textarea")


def test_train_a_lora_and_find_it_in_the_pickers(page, ui_data, tmp_path):
    for i, scene in enumerate(sample_scenes(seed=11, count=3)):
        render(scene).save(tmp_path / f"subject-{i}.png")
    open_tab(page, "Train")
    page.fill("#train-name textarea, #train-name input", "ui-star")
    page.fill("#train-instance textarea, #train-instance input", "a sks star")
    page.locator("#train-prior input[type=checkbox]").uncheck()
    set_number(page, "train-steps", 8)
    page.click("#train-start")  # no images yet: a clear error, nothing queued
    page.wait_for_selector("text=images: give 1 to 32 images")
    page.set_input_files("#train-images input[type=file]",
                         [str(tmp_path / f"subject-{i}.png") for i in range(3)])
    page.wait_for_function("document.querySelector('#train-images').innerText.includes('subject-2')")
    page.click("#train-start")
    wait_state(page, "train", "running")
    done = wait_state(page, "train", "done")
    assert done["step"] == done["total"] == "8"
    page.wait_for_selector("#train-result >> text=ui-star")
    page.wait_for_selector("#train-loss img")
    page.wait_for_selector("#train-samples img")
    screenshot(page, "train")
    assert (ui_data / "models" / "Lora" / "ui-star" / "pytorch_lora_weights.safetensors").exists()
    open_tab(page, "Text to image")
    page.click("#txt2img-lora input")
    page.wait_for_selector("ul[role=listbox] >> text=ui-star")
    open_tab(page, "Models & settings")
    page.wait_for_function("document.querySelector('#settings-models').innerText.includes('ui-star')")


def test_understand_captions_answers_and_enhances(page, tmp_path):
    scene = sample_scenes(seed=31, count=1)[0]
    render(scene).save(tmp_path / "scene.png")
    open_tab(page, "Understand")
    page.set_input_files("#vision-image input[type=file]", str(tmp_path / "scene.png"))
    page.wait_for_selector("#vision-image img")
    page.click("#vision-caption-button")
    page.wait_for_function("document.querySelector('#vision-caption textarea').value.length > 0")
    caption = page.input_value("#vision-caption textarea")
    assert parse_prompt(caption).background == scene.background, caption
    page.fill("#vision-question textarea", "What colour is the background?")
    page.click("#vision-ask-button")
    page.wait_for_function("document.querySelector('#vision-answer textarea').value.length > 0")
    assert page.input_value("#vision-answer textarea") == scene.background
    page.fill("#vision-prompt textarea", "a red star")
    page.click("#vision-enhance-button")
    page.wait_for_function("document.querySelector('#vision-enhanced textarea').value.length > 0")
    enhanced = page.input_value("#vision-enhanced textarea")
    page.click("#vision-send")
    page.wait_for_function("document.querySelector('#txt2img-prompt textarea').value.length > 0")
    assert page.input_value("#txt2img-prompt textarea") == enhanced
    open_tab(page, "Understand")
    page.set_input_files("#vision-chat-input input[type=file]", str(tmp_path / "scene.png"))
    page.locator("#vision-chat-input textarea").fill("What colour is the background?")
    page.locator("#vision-chat-input textarea").press("Enter")
    page.wait_for_function(f"document.querySelector('#vision-chat').innerText.includes('{scene.background}')")
    screenshot(page, "understand")


def test_a_remote_vision_backend_chosen_in_settings_answers(page, ui_url, tmp_path):
    """The Understand tab through an OpenAI-compatible endpoint: this server's own /v1."""
    scene = sample_scenes(seed=32, count=1)[0]
    render(scene).save(tmp_path / "scene.png")
    use_vision_backend(page, "remote", "dreamloom-tiny-vlm", f"{ui_url}/v1")
    page.wait_for_selector("#settings-vision-status >> text=remote")
    open_tab(page, "Understand")
    page.set_input_files("#vision-image input[type=file]", str(tmp_path / "scene.png"))
    page.wait_for_selector("#vision-image img")
    page.fill("#vision-question textarea", "What colour is the background?")
    page.click("#vision-ask-button")
    page.wait_for_function("document.querySelector('#vision-answer textarea').value.length > 0")
    assert page.input_value("#vision-answer textarea") == scene.background
    use_vision_backend(page, "local")
    page.wait_for_selector("#settings-vision-status >> text=local")


def use_vision_backend(page, kind: str, model: str | None = None, url: str | None = None) -> None:
    """Choose the server's vision backend under Models & settings, as the operator does."""
    open_tab(page, "Models & settings")
    page.get_by_role("radio", name=kind).check()
    if model is not None:
        page.fill("#settings-vision-model textarea, #settings-vision-model input", model)
    if url is not None:
        page.fill("#settings-vision-url textarea, #settings-vision-url input", url)
    page.click("#settings-vision-apply")


@pytest.fixture(scope="module")
def locked(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """A server that needs credentials: users ann and op (the operator), and the API key k-eve."""
    data = tmp_path_factory.mktemp("locked")
    with live_server(data, data / "models", users={"ann": "pw", "op": "op-pw"}, api_keys=["k-eve"],
                     operators=["op"]) as url:
        yield url, data


def login(browser, url: str, user: str, password: str):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.get_by_label("username").fill(user)
    page.get_by_label("password").fill(password)
    page.get_by_role("button", name="Login").click()
    return context, page


def ann_job(url: str, **extra) -> dict:
    """A job of Ann's, submitted through the job API with her basic auth."""
    token = base64.b64encode(b"ann:pw").decode()
    request = urllib.request.Request(url + "/api/v1/jobs", headers={"Content-Type": "application/json",
                                                                   "Authorization": f"Basic {token}"},
                                     data=json.dumps({"prompt": "a small red star on a blue background",
                                                      "sampler": "Euler", "steps": 2, **extra}).encode())
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def job_as(url: str, job_id: str, authorization: str) -> dict | None:
    request = urllib.request.Request(f"{url}/api/v1/jobs/{job_id}", headers={"Authorization": authorization})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        assert error.code == 404
        return None


def test_the_page_asks_for_a_login_when_the_server_needs_one(browser, locked):
    url, _ = locked
    context, page = login(browser, url, "ann", "wrong")
    page.wait_for_selector("text=Incorrect")
    page.get_by_label("username").fill("ann")
    page.get_by_label("password").fill("pw")
    page.get_by_role("button", name="Login").click()
    page.wait_for_selector("#txt2img-prompt textarea")
    context.close()


def test_an_api_key_logs_in_as_its_own_principal_whatever_the_name(browser, locked):
    url, _ = locked
    ann = ann_job(url)
    basic = "Basic " + base64.b64encode(b"ann:pw").decode()
    for name in ("ann", " "):
        context, page = login(browser, url, name, "k-eve")
        page.wait_for_selector("#txt2img-prompt textarea")
        open_tab(page, "Gallery & history")
        page.click("#history-refresh")
        time.sleep(2)
        assert page.locator("#history-gallery img").count() == 0, "the key's page showed another user's images"
        context.close()
    context, page = login(browser, url, "ann", "k-eve")
    page.wait_for_selector("#txt2img-prompt textarea")
    page.fill("#txt2img-prompt textarea", "a large green square on a white background")
    set_number(page, "txt2img-steps", 2)
    page.click("#txt2img-generate")
    done = wait_state(page, "txt2img", "done")
    context.close()
    assert job_as(url, done["job"], "Bearer k-eve") is not None  # the page's job is the key's
    assert job_as(url, done["job"], basic) is None  # and not Ann's
    assert job_as(url, ann["id"], basic) is not None


def test_a_page_cannot_see_cancel_or_fetch_another_principals_job(browser, locked):
    url, data = locked
    running = ann_job(url, steps=150, n_iter=3)
    context, page = login(browser, url, "op", "op-pw")  # the operator, and still not Ann
    page.wait_for_selector("#txt2img-prompt textarea")
    time.sleep(1)
    assert bar(page, "txt2img")["state"] == "idle"  # the page does not follow Ann's running job
    page.click("#txt2img-cancel")
    basic = "Basic " + base64.b64encode(b"ann:pw").decode()
    deadline = time.monotonic() + 300
    while (job := job_as(url, running["id"], basic))["state"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert job["state"] == "done", "another principal's page cancelled Ann's job"
    files = [*(data / "jobs" / running["id"]).rglob("*.png")]
    assert files
    for path in files:
        answer = page.request.get(f"{url}/gradio_api/file={path}")
        assert answer.status != 200, f"the page served {path}"
    open_tab(page, "Gallery & history")
    page.click("#history-refresh")
    time.sleep(2)
    assert page.locator("#history-gallery img").count() == 0
    context.close()


def test_only_the_operator_changes_the_servers_vision_backend(browser, locked):
    url, _ = locked
    context, page = login(browser, url, "ann", "pw")
    page.wait_for_selector("#txt2img-prompt textarea")
    use_vision_backend(page, "remote", url="http://127.0.0.1:9/v1")
    page.wait_for_selector("text=only the operator")
    assert "local" in page.inner_text("#settings-vision-status")
    context.close()
    context, page = login(browser, url, "op", "op-pw")
    page.wait_for_selector("#txt2img-prompt textarea")
    use_vision_backend(page, "remote", "dreamloom-tiny-vlm", f"{url}/v1")
    page.wait_for_selector("#settings-vision-status >> text=remote")
    use_vision_backend(page, "local")
    page.wait_for_selector("#settings-vision-status >> text=local")
    context.close()


def test_models_and_settings_tab_lists_models_and_limits(page):
    open_tab(page, "Models & settings")
    for name in ("dreamloom-tiny-sd", "dreamloom-tiny-vlm"):
        page.wait_for_function(f"document.querySelector('#settings-models').innerText.includes('{name}')")
    page.wait_for_function("document.querySelector('#settings-limits').innerText.includes('max_steps')")
    screenshot(page, "settings")
