"""Gradient attribution: unveil vs Captum 0.9.0 on W1 (ResNet-like CNN).

- 3x64x64, batch 8 (in this process): saliency, input x gradient, guided backprop, deconvnet
  (single-pass: ``x floor`` is the time over plain torch forward+backward at batch 8), IG-50,
  SmoothGrad-16 and VarGrad-16 (against Captum's ``NoiseTunnel(Saliency)`` with
  ``nt_samples=16`` and the same absolute ``stdevs``), GradientSHAP-16 (8 background rows),
  DeepLIFT, DeepLIFT-SHAP (4 background rows) (``x floor``: time over plain torch
  forward+backward of the same number of rows at the best batch size, chosen over batch sizes
  1..512). unveil, each Captum variant and the floor are timed in turns (medians of 3 rounds
  after a warm-up), so that a changing machine load hits them alike. Captum at its defaults,
  and IG with ``internal_batch_size=64`` / NoiseTunnel with ``nt_samples_batch_size=8``
  (hand-tuned).
- 3x224x224, batch 2: single-pass methods in this process; IG-50 and SmoothGrad-16 for each
  library in its own subprocess, which reports its time and the rise of peak RSS over its
  level after imports and a warm-up (unveil's default memory budget is 2 GiB).
- Issue 16 (memory in budget): a 2-convolution CNN on 8x3x224x224 with a 256 MiB budget,
  SmoothGrad and VarGrad with 256 samples against IG with 256 steps, each in its own
  subprocess (peak RSS rise, glibc returning freed blocks at once).

Both libraries get the same frozen, eval-mode model and explicit targets (the predicted class),
so Captum does not compute weight gradients. SmoothGrad uses an absolute ``stdev`` in both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from typing import Any

import torch

from ._common import ROOT, Context, Row, alternate, best_batch, floor_run, w1

_SUB = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import torch
torch.set_num_threads(2)
sys.path.insert(0, {root!r})
from benchmarks._common import w1
import captum.attr as ca
from unveil.attribution.path import IntegratedGradients
from unveil.attribution.smooth import SmoothGrad
lib, method = {lib!r}, {method!r}
model, x = w1(batch=2, size=224)
for p in model.parameters():
    p.requires_grad_(False)
xi = x.clone().requires_grad_(True)
torch.autograd.grad(model(xi)[:, 0].sum(), xi)  # prime the allocator
def status(key):  # bytes, from /proc/self/status
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM): the model's calibration peaked higher than what follows
base = status("VmRSS:")
t = model(x).argmax(1)
t0 = time.perf_counter()
if lib == "unveil" and method == "ig":
    IntegratedGradients(model, n_steps=50)(x, target=t)
elif lib == "unveil":
    SmoothGrad(model, n_samples=16, stdev=0.15)(x, target=t, seed=0)
elif method == "ig":
    ca.IntegratedGradients(model).attribute(x, target=t, n_steps=50)
else:
    ca.NoiseTunnel(ca.Saliency(model)).attribute(x, target=t, nt_samples=16, stdevs=0.15)
s = time.perf_counter() - t0
print(json.dumps({{"s": s, "rise_mb": (status("VmHWM:") - base) / 2**20}}))
"""


def _subprocess(lib: str, method: str) -> dict[str, float]:
    code = _SUB.format(root=str(ROOT), lib=lib, method=method)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(ROOT))
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _counting(model: torch.nn.Module) -> tuple[Callable[[], int], Any]:
    n = [0]

    def hook(_m: Any, args: Any) -> None:  # Captum's DeepLift passes (inputs, baselines) tuples
        flat = [v for a in args for v in (a if isinstance(a, tuple) else (a,))]
        n[0] += int(flat[0].shape[0]) * (2 if len(flat) > 1 else 1)

    return (lambda: n[0]), model.register_forward_pre_hook(hook)


def _cases(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, q: bool) -> list[dict[str, Any]]:
    import captum.attr as ca

    from unveil.attribution.deeplift import DeepLift, DeepLiftShap
    from unveil.attribution.gradient import InputXGradient, Saliency
    from unveil.attribution.gradient_shap import GradientShap
    from unveil.attribution.modified_backward import Deconvnet, GuidedBackprop
    from unveil.attribution.path import IntegratedGradients
    from unveil.attribution.smooth import SmoothGrad, VarGrad

    steps, ns = (4, 2) if q else (50, 16)
    g = torch.Generator().manual_seed(1)
    bg = torch.randn(8, *x.shape[1:], generator=g) * x.std()
    n = x.shape[0]
    single = {"saliency": (Saliency(model), lambda: ca.Saliency(model).attribute(x, target=t)),
              "input_x_gradient": (InputXGradient(model),
                                   lambda: ca.InputXGradient(model).attribute(x, target=t)),
              "guided_backprop": (GuidedBackprop(model),
                                  lambda: ca.GuidedBackprop(model).attribute(x, target=t)),
              "deconvnet": (Deconvnet(model), lambda: ca.Deconvolution(model).attribute(x, target=t))}
    out: list[dict[str, Any]] = [
        {"method": k, "ours": (lambda m=m: m(x, target=t)), "refs": [("captum", r)],
         "grad_rows": n, "single": True} for k, (m, r) in single.items()
    ]
    out += [
        {"method": f"integrated_gradients-{steps}",
         "ours": lambda: IntegratedGradients(model, n_steps=steps)(x, target=t),
         "refs": [("captum", lambda: ca.IntegratedGradients(model).attribute(x, target=t, n_steps=steps)),
                  ("captum ibs=64", lambda: ca.IntegratedGradients(model).attribute(
                      x, target=t, n_steps=steps, internal_batch_size=64))],
         "grad_rows": n * steps},
        {"method": f"smoothgrad-{ns}",
         "ours": lambda: SmoothGrad(model, n_samples=ns, stdev=0.15)(x, target=t, seed=0),
         "refs": [("captum", lambda: ca.NoiseTunnel(ca.Saliency(model)).attribute(
                      x, target=t, nt_samples=ns, stdevs=0.15)),
                  ("captum nt_bs=8", lambda: ca.NoiseTunnel(ca.Saliency(model)).attribute(
                      x, target=t, nt_samples=ns, stdevs=0.15, nt_samples_batch_size=8))],
         "grad_rows": n * ns},
        {"method": f"vargrad-{ns}",
         "ours": lambda: VarGrad(model, n_samples=ns, stdev=0.15)(x, target=t, seed=0),
         "refs": [("captum", lambda: ca.NoiseTunnel(ca.Saliency(model)).attribute(
                      x, target=t, nt_samples=ns, stdevs=0.15, nt_type="vargrad"))],
         "grad_rows": n * ns},
        {"method": f"gradient_shap-{ns}",
         "ours": lambda: GradientShap(model, n_samples=ns)(x, target=t, background=bg, seed=0),
         "refs": [("captum", lambda: ca.GradientShap(model).attribute(
             x, baselines=bg, target=t, n_samples=ns))],
         "grad_rows": n * ns},
        {"method": "deeplift", "ours": lambda: DeepLift(model)(x, target=t),
         "refs": [("captum", lambda: ca.DeepLift(model).attribute(x, target=t))],
         "grad_rows": n, "single": True},
        {"method": "deeplift_shap-4bg",
         "ours": lambda: DeepLiftShap(model)(x, target=t, background=bg[:4]),
         "refs": [("captum", lambda: ca.DeepLiftShap(model).attribute(x, baselines=bg[:4], target=t))],
         "grad_rows": n * 4},
    ]
    return out


def _bench(ctx: Context, size: int, batch: int, names: set[str] | None) -> list[Row]:
    q = ctx.quick
    model, x = w1(batch=batch, size=size)
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        t = model(x).argmax(1)
    wl = f"W1 {size}x{size} b{batch}"
    best_bs = None if q else best_batch(model, x, grad=True, quick=size > 64)[0]
    rows: list[Row] = []
    for case in _cases(model, x, t, q):
        if names is not None and case["method"].split("-")[0] not in names:
            continue
        reps, warm = (1, 0) if q else (3, 1)
        exp = case["ours"]()  # also the warm-up of unveil's automatic chunk size
        n_rows = case["grad_rows"]
        floor_fn = None
        if case.get("single"):
            floor_fn = floor_run(model, x, n_rows, n_rows, grad=True)  # plain, one batch
        elif best_bs is not None:
            floor_fn = floor_run(model, x, n_rows, best_bs, grad=True)
        counters = [_counted(model, ref) for _, ref in case["refs"]]
        fns = [case["ours"], *(c[0] for c in counters), *([floor_fn] if floor_fn else [])]
        times = alternate(fns, repeats=reps, warmup=warm)  # in turns: fair under a changing load
        ours, floor = times[0], (times[-1] if floor_fn else None)
        for k, (ref_name, _) in enumerate(case["refs"]):
            note = f"captum evals {counters[k][1]() // (reps + warm)}"
            if case.get("single") and k == 0:
                note += "; floor=plain fwd+bwd"
            rows.append(Row("gradient", case["method"], wl, ours, ref_name, times[1 + k],
                            exp.n_evals, floor if k == 0 else None, note=note))
    return rows


def _counted(model: torch.nn.Module, fn: Callable[[], Any]) -> tuple[Callable[[], Any], Callable[[], int]]:
    """``fn`` counting the model rows it evaluates, and the count so far."""
    total = [0]

    def run() -> Any:
        count, handle = _counting(model)
        try:
            return fn()
        finally:
            total[0] += count()
            handle.remove()

    return run, lambda: total[0]


def _memory_rows() -> list[Row]:
    rows = []
    for method, label in (("ig", "integrated_gradients-50"), ("sg", "smoothgrad-16")):
        ours, theirs = _subprocess("unveil", method), _subprocess("captum", method)
        rows.append(Row("gradient", label, "W1 224x224 b2 (subprocess)", ours["s"], "captum default",
                        theirs["s"], note=f"peak RSS rise: unveil {ours['rise_mb']:.0f} MB "
                        f"(budget 2048 MB), captum {theirs['rise_mb']:.0f} MB",
                        extra={"rise_mb": ours["rise_mb"], "captum_rise_mb": theirs["rise_mb"]}))
    return rows


_SUB16 = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import torch
torch.set_num_threads(2)
import unveil as uv
from unveil.attribution.path import IntegratedGradients
from unveil.attribution.smooth import SmoothGrad, VarGrad
def status(key):  # bytes, from /proc/self/status
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key))
torch.manual_seed(0)
net = torch.nn.Sequential(
    torch.nn.Conv2d(3, 2, 3, stride=2, padding=1), torch.nn.ReLU(),
    torch.nn.Conv2d(2, 2, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
    torch.nn.Flatten(), torch.nn.Linear(2, 3),
).eval()
x = torch.rand(8, 3, 224, 224)
uv.set_memory_budget(256 * 2**20)
SmoothGrad(net, n_samples=2)(x[:1], target=0, seed=0)  # warm-up
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = status("VmRSS:")
t0 = time.perf_counter()
method = {method!r}
if method == "ig":
    exp = IntegratedGradients(net, n_steps=256)(x, target=0)
elif method == "smoothgrad":
    exp = SmoothGrad(net, n_samples=256, stdev=0.1)(x, target=0, seed=0)
else:
    exp = VarGrad(net, n_samples=256, stdev=0.1)(x, target=0, seed=0)
s = time.perf_counter() - t0
print(json.dumps({{"s": s, "rise_mb": (status("VmHWM:") - base) / 2**20, "evals": exp.n_evals}}))
"""


def _budget_rows() -> list[Row]:
    """Issue 16: peak RSS of the noise tunnels against IG at 8x3x224x224 with a 256 MiB budget."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072",
           "TQDM_DISABLE": "1"}
    rows = []
    for method, label in (("ig", "integrated_gradients-256"), ("smoothgrad", "smoothgrad-256"),
                          ("vargrad", "vargrad-256")):
        out = subprocess.run([sys.executable, "-c", _SUB16.format(method=method)],
                             capture_output=True, text=True, check=True, cwd=str(ROOT), env=env)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(Row("gradient", label, "2-conv CNN 224x224 b8 (subprocess)", res["s"],
                        n_evals=res["evals"], note=f"peak RSS rise {res['rise_mb']:.0f} MB "
                        "(budget 256 MiB)", extra={"rise_mb": res["rise_mb"]}))
    return rows


def run(ctx: Context) -> list[Row]:
    warnings.filterwarnings("ignore")
    if ctx.quick:
        return _bench(ctx, 32, 2, None)
    rows = _bench(ctx, 64, 8, None)
    rows += _bench(ctx, 224, 2, {"saliency", "input_x_gradient", "guided_backprop", "deconvnet",
                                 "deeplift"})
    rows += _memory_rows()
    rows += _budget_rows()
    return rows
