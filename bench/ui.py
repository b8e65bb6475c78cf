"""What the web UI costs on top of the job API, side by side on one `dreamloom serve`.

One server process (the embedded dreamloom-tiny-sd, 64x64, 20 steps, DPM++ 2M Karras, CFG 7,
one torch thread) serves both paths; the same request, with fixed seeds, goes alternately
through each (API, UI, API, UI, ...) so drift on a shared machine falls on both alike, after
one warm-up generation per path:

- **API**: ``POST /api/v1/jobs``, then ``GET /api/v1/jobs/{id}`` every 20 ms until the job is
  done; wall time from just before the POST to the GET that shows it done.
- **UI**: headless Chromium (Debian's package, driven by Playwright) on the page at ``/``;
  wall time, on the browser's clock, from the click on Generate to the new job's image
  loaded in ``#txt2img-gallery`` with the job's progress bar in state "done" (checked every
  animation frame). A ``MutationObserver`` on the bar counts the progress updates the page
  received: its distinct ``data-step`` values while running, and every change of the bar.

For both, the job's own run time (``started`` to ``finished`` as the server records them) is
read back from the API, so the cost of each path is its wall time minus its job's run time;
the timeline is split at the server's timestamps (submit, queue, run, delivery), which share
the machine's clock with both clients. Around each generation the CPU time of the server
process and of the browser's processes is read from /proc: on a small machine the page's
cost is also CPU taken from the job. The images of each API/UI pair (same seed) are compared
pixel for pixel. The page's first load (``goto`` until the prompt box is visible) is
timed in fresh browser contexts, so nothing is cached. Also measured: the CPU an idle server
spends with the UI and without it (``--no-ui``), and an idle open page's, and the files
Gradio's cache holds at the end.

    OMP_NUM_THREADS=1 python bench/ui.py           # writes bench/results/ui.json (about 2 minutes)
    python bench/ui.py --runs 20 --loads 10 --preview-every 0
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from playwright.sync_api import Browser, Page, sync_playwright

PROMPT = "a large red circle on a yellow background"
STEPS = 20
SIZE = 64
FIRST_SEED = 1000
POLL_S = 0.02
TIMEOUT_S = 120
SETTLE_S = 3
#: Where the server's Gradio keeps the files it sends to the page (counted at the end).
GRADIO_CACHE = "gradio-cache"
FINISHED = ("done", "failed", "cancelled")

#: Installed in the page before each click: remembers the job the bar shows now, the click's
#: time, and every later state of the bar for another job.
ARM_JS = """() => {
  const bar = () => document.querySelector('#txt2img-progress .dl-progress');
  const probe = {old: bar()?.dataset.job || '', clicked: null, shown: null, seen: [], srcs: []};
  probe.srcs = [...document.querySelectorAll('#txt2img-gallery img')].map(img => img.src);
  const record = () => {
    const b = bar();
    if (!b || !b.dataset.job || b.dataset.job === probe.old) return;
    const now = {state: b.dataset.state, step: Number(b.dataset.step)};
    const last = probe.seen[probe.seen.length - 1];
    if (!last || last.state !== now.state || last.step !== now.step) probe.seen.push(now);
  };
  probe.observer = new MutationObserver(record);
  probe.observer.observe(document.querySelector('#txt2img-progress'),
                         {subtree: true, childList: true, attributes: true, characterData: true});
  document.querySelector('#txt2img-generate').addEventListener(
    'click', () => { probe.clicked = performance.timeOrigin + performance.now(); }, {capture: true, once: true});
  window.__probe = probe;
}"""

#: True (the job id) once the new job's bar says done and its image has loaded in the gallery
#: (an image not shown before the click: every UI generation has its own seed, so its own file).
SHOWN_JS = """() => {
  const probe = window.__probe;
  const bar = document.querySelector('#txt2img-progress .dl-progress');
  const job = bar?.dataset.job;
  if (!job || job === probe.old || bar.dataset.state === 'queued' || bar.dataset.state === 'running') return false;
  if (bar.dataset.state !== 'done') return job;
  const fresh = [...document.querySelectorAll('#txt2img-gallery img')]
    .filter(img => !probe.srcs.includes(img.src) && img.complete && img.naturalWidth > 0);
  if (!fresh.length) return false;
  probe.shown = performance.timeOrigin + performance.now();
  return job;
}"""

#: What the probe collected (the observer is stopped).
TAKE_JS = """() => {
  const probe = window.__probe;
  probe.observer.takeRecords();
  probe.observer.disconnect();
  return {clicked: probe.clicked, shown: probe.shown, seen: probe.seen};
}"""


def processes() -> dict[int, tuple[int, str, float]]:
    """Every process's parent, name and CPU seconds so far (user + system), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # it exited
            continue
        name, fields = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
        table[int(stat.parent.name)] = (int(fields[1]), name, (int(fields[11]) + int(fields[12])) / tick)
    return table


def descendants(table: dict[int, tuple[int, str, float]], root: int) -> set[int]:
    """``root`` and every process under it (Chromium forks a tree of helpers)."""
    found, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _, _) in table.items() if ppid == parent]
        found.update(children)
        frontier.extend(children)
    return found


class CpuMeter:
    """CPU seconds spent so far by the server (its process tree) and by the browser (every
    chromium process this benchmark started): on a 2-core machine, what the page costs in CPU
    is as telling as what it costs in time."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid

    def read(self) -> dict[str, float]:
        table = processes()
        server = descendants(table, self.server_pid)
        browser = {pid for pid in descendants(table, os.getpid()) - server if table[pid][1] == "chromium"}
        return {"server": sum(table[pid][2] for pid in server), "browser": sum(table[pid][2] for pid in browser)}

    def since(self, before: dict[str, float]) -> dict[str, float]:
        """Milliseconds of CPU each side used since ``before`` (a ``read``)."""
        now = self.read()
        return {f"{side}_cpu_ms": 1000 * (now[side] - before[side]) for side in now}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(data_dir: Path, threads: int, preview_every: int = 5, ui: bool = True) -> Iterator[tuple[str, int]]:
    """A real `dreamloom serve` in its own process, so the clients in this process (Playwright,
    the API poller) do not share its interpreter; yields its URL and pid."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "DREAMLOOM_MODELS_DIR": str(data_dir / "models"),
           "GRADIO_TEMP_DIR": str(data_dir / GRADIO_CACHE)}
    process = subprocess.Popen(
        [sys.executable, "-m", "dreamloom", "serve", "--port", str(port), "--data-dir", str(data_dir),
         "--preview-every", str(preview_every), "--ui" if ui else "--no-ui"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(60)


def wait_until_up(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            httpx.get(f"{url}/api/v1/jobs", timeout=5).raise_for_status()
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError("the server did not start")


def payload(seed: int) -> dict:
    """The API request equal to what the page sends with its defaults, prompt, steps and seed."""
    return {"prompt": PROMPT, "steps": STEPS, "seed": seed, "width": SIZE, "height": SIZE}


def job_timeline(job: dict, start: float, seen: float) -> dict:
    """Milliseconds of each stage, from the client's start to the client seeing the result,
    split at the server's timestamps (all on the machine's wall clock)."""
    ms = {"wall_ms": 1000 * (seen - start), "submit_ms": 1000 * (job["created"] - start),
          "queue_ms": 1000 * (job["started"] - job["created"]), "run_ms": 1000 * (job["finished"] - job["started"]),
          "deliver_ms": 1000 * (seen - job["finished"])}
    ms["overhead_ms"] = ms["wall_ms"] - ms["run_ms"]
    return ms


def api_generation(http: httpx.Client, meter: CpuMeter, seed: int) -> dict:
    """One generation through the job API, polled; also the time to download its PNG."""
    cpu = meter.read()
    start_wall, start = time.time(), time.perf_counter()
    job = http.post("/api/v1/jobs", json=payload(seed)).raise_for_status().json()
    steps: set[int] = set()
    while job["state"] not in FINISHED:
        time.sleep(POLL_S)
        job = http.get(f"/api/v1/jobs/{job['id']}").raise_for_status().json()
        if job["state"] == "running":
            steps.add(job["progress"]["step"])
    seen = start_wall + (time.perf_counter() - start)
    used = meter.since(cpu)
    png = http.get(job["result"]["urls"][0]).raise_for_status().content
    with_image = start_wall + (time.perf_counter() - start)
    assert job["state"] == "done", job
    return {"job": job["id"], **job_timeline(job, start_wall, seen), "with_png_ms": 1000 * (with_image - start_wall),
            "steps_seen": len(steps), **used, "request": job["request"], "png": png}


def open_page(browser: Browser, url: str) -> tuple[Page, float]:
    """A fresh context (empty cache) on the page; seconds from goto to the prompt box visible."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(1000 * TIMEOUT_S)
    start = time.perf_counter()
    page.goto(url)
    page.wait_for_selector("#txt2img-prompt textarea", state="visible")
    return page, time.perf_counter() - start


def set_number(page: Page, element_id: str, value: int) -> None:
    """Type into a slider's or number box's input, as a person does."""
    box = page.locator(f"#{element_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")


def ui_generation(page: Page, http: httpx.Client, meter: CpuMeter, seed: int) -> dict:
    """One generation through the page: click Generate, wait for the image in the gallery."""
    set_number(page, "txt2img-seed", seed)
    page.evaluate(ARM_JS)
    cpu = meter.read()
    start = time.perf_counter()
    page.click("#txt2img-generate")
    job_id = page.wait_for_function(SHOWN_JS, polling="raf").json_value()
    driver_s = time.perf_counter() - start
    used = meter.since(cpu)
    probe = page.evaluate(TAKE_JS)
    job = http.get(f"/api/v1/jobs/{job_id}").raise_for_status().json()
    assert job["state"] == "done", job
    running = {s["step"] for s in probe["seen"] if s["state"] == "running"}
    png = http.get(job["result"]["urls"][0]).raise_for_status().content
    return {"job": job_id, **job_timeline(job, probe["clicked"] / 1000, probe["shown"] / 1000),
            "driver_ms": 1000 * driver_s, "steps_seen": len(running), "bar_updates": len(probe["seen"]),
            **used, "bar_states": probe["seen"], "request": job["request"], "png": png}


def same_pixels(a: bytes, b: bytes) -> bool:
    pixels = [np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for data in (a, b)]
    return pixels[0].shape == pixels[1].shape and bool((pixels[0] == pixels[1]).all())


def summary(values: list[float]) -> dict:
    return {"p50": statistics.median(values), "mean": statistics.mean(values),
            "min": min(values), "max": max(values)}


def summarize(runs: list[dict], keys: tuple[str, ...]) -> dict:
    return {key: summary([run[key] for run in runs]) for key in keys}


def page_loads(browser: Browser, url: str, count: int) -> list[float]:
    """Seconds for ``count`` first loads of the page, each in a fresh context."""
    times = []
    for _ in range(count):
        page, seconds = open_page(browser, url)
        times.append(seconds)
        page.context.close()
    return times


def idle_cpu(meter: CpuMeter, seconds: float) -> dict[str, float]:
    """CPU milliseconds per second each side spends while nobody asks anything."""
    before = meter.read()
    time.sleep(seconds)
    return {side: used / seconds for side, used in meter.since(before).items()}


def idle_api_only_server(threads: int, seconds: float) -> float:
    """The same idle measure on a `--no-ui` server: the baseline for what mounting the page costs."""
    with tempfile.TemporaryDirectory() as folder, server(Path(folder), threads, ui=False) as (_, pid):
        time.sleep(SETTLE_S)
        return idle_cpu(CpuMeter(pid), seconds)["server_cpu_ms"]


def folder_usage(folder: Path) -> dict[str, int]:
    files = [path for path in folder.rglob("*") if path.is_file()]
    return {"files": len(files), "bytes": sum(path.stat().st_size for path in files)}


def load_average() -> list[float]:
    return list(os.getloadavg())


def machine(chromium: str, browser: Browser, threads: int) -> dict:
    import gradio
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "server_torch_threads": threads, "torch": torch.__version__,
            "gradio": gradio.__version__, "chromium": f"{chromium} {browser.version}"}


def alternate(page: Page, http: httpx.Client, meter: CpuMeter, runs: int) -> tuple[list[dict], list[dict]]:
    """One warm-up per path, then ``runs`` generations per path in turn: API, UI, API, UI, ...
    The pair ``i`` shares its seed, so both draw the same image."""
    api_generation(http, meter, FIRST_SEED - 1)  # warm-ups: model load, first-call costs on both paths
    ui_generation(page, http, meter, FIRST_SEED - 2)
    api_runs, ui_runs = [], []
    for i in range(runs):
        api_runs.append(api_generation(http, meter, FIRST_SEED + i))
        ui_runs.append(ui_generation(page, http, meter, FIRST_SEED + i))
        a, u = api_runs[-1], ui_runs[-1]
        print(f"{i + 1}/{runs}: API {a['wall_ms']:.0f} ms (job {a['run_ms']:.0f}, server CPU "
              f"{a['server_cpu_ms']:.0f}), UI {u['wall_ms']:.0f} ms (job {u['run_ms']:.0f}, server CPU "
              f"{u['server_cpu_ms']:.0f}, browser CPU {u['browser_cpu_ms']:.0f}), {u['steps_seen']} steps shown",
              flush=True)
    return api_runs, ui_runs


def run(args: argparse.Namespace) -> dict:
    load_before = load_average()
    idle = {}
    with tempfile.TemporaryDirectory() as folder, \
            server(Path(folder), args.threads, args.preview_every) as (url, pid), \
            httpx.Client(base_url=url, timeout=TIMEOUT_S) as http, sync_playwright() as p:
        meter = CpuMeter(pid)
        httpx.get(url + "/", timeout=TIMEOUT_S).raise_for_status()  # Gradio's first page render
        time.sleep(SETTLE_S)
        idle["ui_server_no_page"] = idle_cpu(meter, args.idle_s)["server_cpu_ms"]
        browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        loads = page_loads(browser, url, args.loads)
        page, _ = open_page(browser, url)
        page.fill("#txt2img-prompt textarea", PROMPT)
        set_number(page, "txt2img-steps", STEPS)
        time.sleep(SETTLE_S)
        page_open = idle_cpu(meter, args.idle_s)
        idle["ui_server_page_open"], idle["browser_page_open"] = page_open["server_cpu_ms"], page_open["browser_cpu_ms"]
        api_runs, ui_runs = alternate(page, http, meter, args.runs)
        cache = {**folder_usage(Path(folder) / GRADIO_CACHE), "ui_generations": args.runs + 1}
        info = machine(args.chromium, browser, args.threads)
        browser.close()
    idle["api_only_server"] = idle_api_only_server(args.threads, args.idle_s)
    return report(args, info, loads, idle, cache, api_runs, ui_runs, load_before)


def report(args: argparse.Namespace, info: dict, loads: list[float], idle: dict[str, float], cache: dict,
           api_runs: list[dict], ui_runs: list[dict], load_before: list[float]) -> dict:
    """The summaries (p50, mean, min, max of each measure), the ratios, and every run."""
    same = sum(same_pixels(a.pop("png"), u.pop("png")) for a, u in zip(api_runs, ui_runs))
    requests = [{k: v for k, v in run.pop("request").items() if k != "origin"} for run in (*api_runs, *ui_runs)]
    assert all(r == {**requests[0], "seed": r["seed"]} for r in requests), "the two paths sent different requests"
    timing = ("wall_ms", "submit_ms", "queue_ms", "run_ms", "deliver_ms", "overhead_ms", "server_cpu_ms",
              "browser_cpu_ms")
    api = summarize(api_runs, (*timing, "with_png_ms", "steps_seen"))
    ui = summarize(ui_runs, (*timing, "driver_ms", "steps_seen", "bar_updates"))
    return {
        "machine": info,
        "load_average_1_5_15": {"before": load_before, "after": load_average()},
        "request": {**requests[0], "seed": f"{FIRST_SEED} + i"}, "preview_every": args.preview_every, "runs": args.runs,
        "page_load_s": {"first": loads[0], "all": loads, **({"p50_after_first": statistics.median(loads[1:])}
                                                             if len(loads) > 1 else {})},
        "idle_cpu_ms_per_s": idle, "gradio_cache": cache,
        "api": api, "ui": ui,
        "ratio_ui_over_api": {stat: ui["wall_ms"][stat] / api["wall_ms"][stat] for stat in ("p50", "mean")},
        "ui_extra_overhead_ms": {stat: ui["overhead_ms"][stat] - api["overhead_ms"][stat] for stat in ("p50", "mean")},
        "same_image": f"{same}/{len(api_runs)}",
        "api_runs": api_runs, "ui_runs": ui_runs,
    }


def print_table(result: dict) -> None:
    print("| path | wall p50 / mean ms | job run p50 / mean ms | overhead p50 / mean ms | server CPU ms | "
          "browser CPU ms | steps shown |")
    for name in ("api", "ui"):
        r = result[name]
        cells = [f"{r[key]['p50']:.0f} / {r[key]['mean']:.0f}" for key in ("wall_ms", "run_ms", "overhead_ms")]
        cells += [f"{r[key]['mean']:.0f}" for key in ("server_cpu_ms", "browser_cpu_ms")]
        print(f"| {name} | {' | '.join(cells)} | {r['steps_seen']['mean']:.1f} |")
    ratio = result["ratio_ui_over_api"]
    print(f"UI / API wall: {ratio['p50']:.2f}x (p50), {ratio['mean']:.2f}x (mean); "
          f"first page load {result['page_load_s']['first']:.2f} s; same image {result['same_image']}")
    print("idle CPU ms per s: " + ", ".join(f"{k} {v:.0f}" for k, v in result["idle_cpu_ms_per_s"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="timed generations per path (after one warm-up each)")
    parser.add_argument("--loads", type=int, default=5, help="first loads of the page, each in a fresh context")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")),
                        help="the server's torch threads (default: $OMP_NUM_THREADS, else 1)")
    parser.add_argument("--preview-every", type=int, default=5, help="the server's --preview-every (its default: 5)")
    parser.add_argument("--idle-s", type=float, default=5, help="seconds of each idle CPU measure")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ui.json")
    args = parser.parse_args()
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print_table(result)


if __name__ == "__main__":
    main()
