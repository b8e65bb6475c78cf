"""Serving throughput and latency: batching across queued jobs on vs off.

One `dreamloom serve` process per mode over the embedded dreamloom-tiny-sd (64x64, 20 steps,
DPM++ 2M Karras, CFG 7): "off" is `--batch-size 1`, one job at a time as AUTOMATIC1111 serves;
"on" is `--batch-size 8`, compatible queued jobs drawn in one forward pass. At 1, 4, 8 and 16
concurrent clients, each client sends AUTOMATIC1111 `txt2img` requests (one image each,
distinct seeds) one after another; throughput is images per second of wall time, latency is
per request, submit to images received. Modes run in the order off, on, on, off; each row is
the mean of its two runs.

    python bench/serve.py            # writes bench/results/serve.json (about 8 minutes)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

CONCURRENCY = (1, 4, 8, 16)
PAYLOAD = {"prompt": "a large red circle left of a small blue square on a yellow background", "steps": 20,
           "width": 64, "height": 64, "sampler_name": "DPM++ 2M Karras", "cfg_scale": 7, "batch_size": 1}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: Path, batch_size: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "dreamloom", "serve", "--port", str(port), "--data-dir", str(data_dir),
         "--batch-size", str(batch_size), "--preview-every", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "DREAMLOOM_MODELS_DIR": str(data_dir)})
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            httpx.get(f"{url}/sdapi/v1/sd-models", timeout=5).raise_for_status()
            return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not start")


async def load(url: str, clients: int, per_client: int, first_seed: int) -> dict:
    latencies: list[float] = []

    async def client(http: httpx.AsyncClient, index: int) -> None:
        for i in range(per_client):
            start = time.perf_counter()
            response = await http.post(f"{url}/sdapi/v1/txt2img",
                                       json={**PAYLOAD, "seed": first_seed + index * per_client + i})
            response.raise_for_status()
            assert len(response.json()["images"]) == 1
            latencies.append(time.perf_counter() - start)

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients)) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http, i) for i in range(clients)))
        wall = time.perf_counter() - start
    latencies.sort()
    return {"images": len(latencies), "seconds": wall, "images_per_s": len(latencies) / wall,
            "p50_s": statistics.median(latencies), "p95_s": latencies[max(0, round(0.95 * len(latencies)) - 1)]}


def run_mode(batch_size: int, per_client: dict[int, int]) -> dict[int, dict]:
    with tempfile.TemporaryDirectory() as folder:
        process, url = start_server(Path(folder), batch_size)
        try:
            asyncio.run(load(url, 1, 2, 0))  # warm-up: model load, first-call overheads
            return {c: asyncio.run(load(url, c, per_client[c], 1000 * c)) for c in CONCURRENCY}
        finally:
            process.terminate()
            process.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=32, help="requests per concurrency level (at least 2 per client)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve.json")
    args = parser.parse_args()
    per_client = {c: max(2, args.requests // c) for c in CONCURRENCY}
    runs: dict[str, list[dict[int, dict]]] = {"off": [], "on": []}
    for mode in ("off", "on", "on", "off"):
        runs[mode].append(run_mode(1 if mode == "off" else 8, per_client))
        print(f"batching {mode}: " + ", ".join(
            f"{c}: {r['images_per_s']:.2f} img/s p50 {r['p50_s']:.2f}s" for c, r in runs[mode][-1].items()), flush=True)
    rows = []
    for c in CONCURRENCY:
        row = {"clients": c}
        for mode in ("off", "on"):
            for key in ("images_per_s", "p50_s", "p95_s"):
                row[f"{mode}_{key}"] = statistics.mean(run[c][key] for run in runs[mode])
        row["throughput_ratio"] = row["on_images_per_s"] / row["off_images_per_s"]
        rows.append(row)
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "payload": PAYLOAD,
              "requests_per_client": per_client, "rows": rows, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print("| clients | images/s off → on | ratio | p50 s off → on | p95 s off → on |")
    for r in rows:
        print(f"| {r['clients']} | {r['off_images_per_s']:.2f} → {r['on_images_per_s']:.2f} | "
              f"{r['throughput_ratio']:.2f}× | {r['off_p50_s']:.2f} → {r['on_p50_s']:.2f} | "
              f"{r['off_p95_s']:.2f} → {r['on_p95_s']:.2f} |")


if __name__ == "__main__":
    main()
