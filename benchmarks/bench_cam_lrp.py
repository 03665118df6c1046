"""CAMs against pytorch-grad-cam 1.5.7 and LRP against Zennit 0.5.1, on W1.

Rows: Grad-CAM, Grad-CAM++, LayerCAM (floor: plain torch forward+backward at the same batch),
EigenCAM (floor: plain forward), Score-CAM (floor: the best per-row forward throughput times its
model evaluations), LRP ε-plus-flat on one LRP object, and LRP through ``uv.explain`` with a new
method object each call, as users call it (floor of both: plain forward+backward). The CAMs use the last
residual stage ``layer4``; pytorch-grad-cam runs at its defaults (its maps resized to the input
with OpenCV, which is part of what it costs). Zennit gets the batch-norm merge and a residual
canonizer for W1's block (written here, as Zennit's own covers torchvision's blocks only), so
both compute the same relevance; the note gives the largest difference. With ``--quick``
(smoke run) the batch and image are small, the CAMs use ``layer2`` and the references are
skipped.

Peak memory (full run only) is measured per library in its own subprocess
(``python -m benchmarks.bench_cam_lrp --peak NAME``): after a warm-up call the RSS high-water
mark is reset and the growth of the peak over the RSS during one more call is reported.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ._common import (
    Context,
    Row,
    _Block,
    median_time,
    per_row_floor,
    plain_time,
    use_torchvision_stub,
    w1,
)

LAYER = "layer4"
CAMS = [("grad_cam", "GradCAM"), ("grad_cam_plus_plus", "GradCAMPlusPlus"),
        ("layer_cam", "LayerCAM"), ("eigen_cam", "EigenCAM"), ("score_cam", "ScoreCAM")]


def _unveil_cam(name: str, model: torch.nn.Module, layer: str = LAYER, **options: Any) -> Any:
    import unveil.attribution.cam  # noqa: F401  # registers the CAMs
    from unveil.core.registry import get_method

    return get_method(name).cls(model, layer=layer, **options)


def _ref_cam(name: str, model: torch.nn.Module) -> Any:
    import pytorch_grad_cam as pgc

    return getattr(pgc, name)(model, [model.get_submodule(LAYER)])


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence pytorch-grad-cam's tqdm bars (Score-CAM prints one per image)."""
    old = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if old is None:
            del os.environ["TQDM_DISABLE"]
        else:
            os.environ["TQDM_DISABLE"] = old


def _block_canonizer() -> Any:
    """Zennit canonizer summing W1's residual branches with a ``Sum`` module (Norm rule)."""
    from zennit.canonizers import AttributeCanonizer
    from zennit.layer import Sum

    def forward(self: _Block, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(self.canonizer_sum(torch.stack([self.short(x), y], dim=-1)))

    def attribute_map(name: str, module: torch.nn.Module) -> dict[str, Any] | None:
        if isinstance(module, _Block):
            return {"forward": forward.__get__(module), "canonizer_sum": Sum()}
        return None

    return AttributeCanonizer(attribute_map)


def _zennit(model: torch.nn.Module) -> tuple[Any, Callable[[torch.Tensor], torch.Tensor]]:
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonPlusFlat

    comp = EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm(), _block_canonizer()])
    attributor = Gradient(model, comp)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            pred = model(x).argmax(1)

        def init(out: torch.Tensor) -> torch.Tensor:
            return torch.eye(out.shape[1], dtype=out.dtype)[pred] * out

        return attributor(x, init)[1]

    return attributor, run


def _cam_rows(ctx: Context, model: torch.nn.Module, x: torch.Tensor, floors: dict[str, float]) -> list[Row]:
    rows = []
    for name, ref_name in CAMS:
        # the smoke run: a stage with fewer channels, no chunk-size probe
        ours = (_unveil_cam(name, model, "layer2", batch_size=64) if ctx.quick
                else _unveil_cam(name, model))
        reps = 1 if ctx.quick or name == "score_cam" else 7
        t = median_time(lambda o=ours: o(x), repeats=reps)
        exp = ours(x)
        ref_t = None
        if not ctx.quick:
            ref = _ref_cam(ref_name, model)
            with _quiet():
                ref_t = median_time(lambda r=ref: r(input_tensor=x, targets=None), repeats=reps)
            ref.activations_and_grads.release()
        if name == "eigen_cam":
            floor, kind = floors["fwd"], "plain forward"
        elif name == "score_cam":
            floor, kind = floors["row"] * exp.n_evals, "forward floor x evals"
        else:
            floor, kind = floors["fwd_bwd"], "plain fwd+bwd"
        rows.append(Row("cam", name, "W1", t, ref_name=f"pytorch-grad-cam {ref_name}",
                        ref_s=ref_t, n_evals=exp.n_evals, floor_s=floor, note=f"floor: {kind}"))
    return rows


def _lrp_row(ctx: Context, model: torch.nn.Module, x: torch.Tensor, floor: float) -> Row:
    from unveil.attribution.lrp import LRP

    lrp = LRP(model, composite="epsilon_plus_flat")
    reps = 1 if ctx.quick else 7
    t = median_time(lambda: lrp(x), repeats=reps)
    exp = lrp(x)
    note = "floor: plain fwd+bwd"
    ref_t = None
    if not ctx.quick:
        attributor, run = _zennit(model)
        with attributor:
            ref_t = median_time(lambda: run(x), repeats=reps)
            rel = run(x).detach().numpy()
        diff = float(abs(rel - exp.values).max() / abs(rel).max())
        note += f"; max|diff|/max|R| vs Zennit {diff:.1e} (float32)"
    return Row("lrp", "lrp epsilon_plus_flat", "W1", t, ref_name="zennit EpsilonPlusFlat",
               ref_s=ref_t, n_evals=exp.n_evals, floor_s=floor, note=note)


def _lrp_explain_row(ctx: Context, model: torch.nn.Module, x: torch.Tensor, floor: float) -> Row:
    """``uv.explain(model, x, method="lrp")`` as users call it: a new LRP object every call, so
    only the cache of prepared models (:mod:`unveil.core.prepared`) saves the canonized copy."""
    import unveil as uv
    from unveil.core import prepared

    def call() -> Any:
        return uv.explain(model, x, method="lrp")

    prepared.clear()
    t0 = time.perf_counter()
    exp = call()  # the first call prepares the copy
    first = time.perf_counter() - t0
    t = median_time(call, repeats=1 if ctx.quick else 7)
    return Row("lrp", "lrp through uv.explain (fresh call each time)", "W1", t, n_evals=exp.n_evals,
               floor_s=floor, note=f"floor: plain fwd+bwd; the first call, which prepares the "
               f"canonized copy, {first * 1e3:.0f} ms")


def run(ctx: Context) -> list[Row]:
    use_torchvision_stub()
    model, x = w1(batch=1, size=16) if ctx.quick else w1()
    floors = {
        "fwd_bwd": plain_time(model, x, grad=True, repeats=ctx.repeats(7)),
        "fwd": plain_time(model, x, grad=False, repeats=ctx.repeats(7)),
    }
    floors["row"] = floors["fwd"] / len(x) if ctx.quick else per_row_floor(model, x, grad=False)
    rows = _cam_rows(ctx, model, x, floors)
    rows.append(_lrp_row(ctx, model, x, floors["fwd_bwd"]))
    explain_row = _lrp_explain_row(ctx, model, x, floors["fwd_bwd"])
    if not ctx.quick:
        for r in rows:
            key = r.method.split()[0]
            ours, ref = _peak(f"unveil:{key}"), _peak(f"ref:{key}")
            r.extra["peak_mib"] = {"unveil": ours, "reference": ref}
            r.note += f"; peak +{ours:.0f} MiB vs +{ref:.0f} MiB"
    return [*rows, explain_row]


# ---------------------------------------------------------------------------- peak memory
def _peak(kind: str) -> float:
    """Peak RSS growth (MiB) of a fresh process while it runs ``kind`` (after a warm-up)."""
    # a fixed mmap threshold makes glibc return freed activations at once, so RSS tracks the
    # live working set rather than what the allocator kept from earlier calls
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_cam_lrp", "--peak", kind],
                         capture_output=True, text=True, check=True, env=env)
    return float(out.stdout.strip().splitlines()[-1])


def _rss_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return float(line.split()[1]) / 1024
    raise OSError(field)


def _peak_main(kind: str) -> None:
    use_torchvision_stub()
    torch.set_num_threads(2)
    model, x = w1()
    side, _, method = kind.partition(":")
    fn: Callable[[], Any] = lambda: None  # noqa: E731
    if method.startswith("lrp"):
        if side == "unveil":
            from unveil.attribution.lrp import LRP

            lrp = LRP(model, composite="epsilon_plus_flat")
            fn = lambda: lrp(x)  # noqa: E731
        else:
            attributor, zrun = _zennit(model)
            attributor.__enter__()
            fn = lambda: zrun(x)  # noqa: E731
    elif method:
        ref_name = dict(CAMS)[method]
        obj = _unveil_cam(method, model) if side == "unveil" else _ref_cam(ref_name, model)
        fn = (lambda: obj(x)) if side == "unveil" else (lambda: obj(input_tensor=x, targets=None))
    with _quiet():
        fn()  # warm-up: imports, caches, allocator
        try:  # reset the high-water mark (Linux >= 4.0), then measure the method alone
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            base = _rss_mib("VmRSS")
            fn()
            print(_rss_mib("VmHWM") - base)
        except OSError:
            print(float("nan"))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--peak", required=True)
    _peak_main(ap.parse_args().peak)
