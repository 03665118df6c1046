"""How long light dashboard requests take while a heavy one runs, against a real ``unveil serve``.

``python -m benchmarks.dashboard_latency csv`` uploads a 2 MB CSV table to the breast-cancer
model; ``python -m benchmarks.dashboard_latency sanity`` runs the sanity check of exact Shapley
values on the digits CNN. Meanwhile it asks ``/api/health``, ``/api/models`` and (for ``sanity``)
a saliency map of the breast-cancer model in a loop, and prints the slowest and median answer of
each. Arguments after the workload go to ``unveil serve`` (e.g. ``--time-budget 20``); the
environment's ``PYTHONPATH`` picks the unveil that serves. Not part of ``benchmarks.run``: it
measures the server, not a method.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(base: str, path: str, body: Any = None, ctype: str = "application/json"
             ) -> tuple[int, bytes, float]:
    data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, headers={"content-type": ctype} if data else {})
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=900) as resp:
            status, out = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, out = exc.code, exc.read()
    return status, out, time.perf_counter() - t


def main(argv: list[str]) -> None:
    """Run one workload (``csv`` or ``sanity``) and print the latencies."""
    what, extra = argv[0], argv[1:]
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "unveil.cli", "serve", "--port", str(port), *extra],
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            try:
                if _request(base, "/api/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.3)
        for model in ("digits_cnn", "breast_cancer_mlp"):  # loaded (and trained) before timing
            _request(base, f"/api/models/{model}/methods")
        if what == "csv":
            rows = np.random.default_rng(0).normal(size=(6000, 30)) * 100 + 500
            text = "\n".join(",".join(f"{v:.6f}" for v in r) for r in rows).encode()
            text = text[: text.rfind(b"\n", 0, 2 * 1024 * 1024 - 100)]

            def heavy() -> tuple[int, bytes, float]:
                return _request(base, "/api/models/breast_cancer_mlp/uploads", text, "application/octet-stream")
        else:
            def heavy() -> tuple[int, bytes, float]:
                return _request(base, "/api/sanity", {"model": "digits_cnn", "sample": 0,
                                                      "method": "exact_shapley"})
        got: dict[str, tuple[int, bytes, float]] = {}
        t = threading.Thread(target=lambda: got.update(heavy=heavy()))
        t.start()
        lat: dict[str, list[float]] = {"health": [], "models": [], "explain": []}
        time.sleep(0.05)
        while t.is_alive():
            lat["health"].append(_request(base, "/api/health")[2])
            lat["models"].append(_request(base, "/api/models")[2])
            if what != "csv":
                lat["explain"].append(_request(base, "/api/explain", {
                    "model": "breast_cancer_mlp", "sample": 0, "methods": ["saliency"], "evaluate": False})[2])
            time.sleep(0.01)
        t.join()
        status, body, secs = got["heavy"]
        print(f"{what}: status {status} after {secs:.2f} s: {body[:200].decode(errors='replace')}")
        for name, v in lat.items():
            if v:
                print(f"  {name:8s} n={len(v):4d} slowest {max(v):7.3f} s  median {sorted(v)[len(v) // 2]:.3f} s")
        if what != "csv":
            time.sleep(2)
            status, _, secs = _request(base, "/api/explain", {"model": "digits_cnn", "sample": 1,
                                                              "methods": ["saliency"], "evaluate": False})
            print(f"  then a saliency map of the digits CNN: status {status} in {secs:.2f} s")
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(60)


if __name__ == "__main__":
    main(sys.argv[1:] or ["csv"])
