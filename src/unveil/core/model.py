"""One interface over whatever the user calls a model.

:class:`Model` wraps a ``torch.nn.Module``, a torch function, a scikit-learn estimator or a
numpy function, and gives every method the same few operations: a batched forward pass that
returns scores, target selection, gradients when the model has them, layer lookup, and a count
of model evaluations. Methods never talk to the user's object directly.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Union

import numpy as np
import torch
from torch import nn

from ..errors import (
    InputError,
    ModelError,
    NonFiniteOutputError,
    NotDifferentiableError,
    TargetError,
    UnveilError,
)
from .hooks import StopForward, get_submodule, model_guard
from .reference import Reference, as_reference

__all__ = ["Model", "OutputSpec", "TargetSpec", "as_model", "frame_columns", "known_names",
           "to_tensor", "token_strings"]

OutputSpec = Union[Literal["logits", "probs"], Callable[[torch.Tensor], torch.Tensor]]
TargetSpec = Union[int, str, Sequence[int], np.ndarray, torch.Tensor, None]

_SHAPE_WORDS = ("shape", "size", "dimension", "mat1", "mat2", "Expected", "expected", "channels",
                "elements")


def to_tensor(x: Any, *, name: str = "inputs") -> torch.Tensor:
    """Convert array-likes to a tensor; reject objects that are not numeric arrays."""
    if isinstance(x, torch.Tensor):
        return x
    try:
        arr = np.asarray(x)
    except Exception as exc:  # pragma: no cover - numpy raises many kinds
        raise InputError(f"{name} must be a tensor or array, got {type(x).__name__}") from exc
    if isinstance(x, Mapping):
        raise InputError(
            f"{name} is a mapping (keys {sorted(map(str, x))}); tokenizer output goes to "
            "unveil.explain(model, encoding), which reads its input_ids and attention_mask"
        )
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputError(
            f"{name} must be a numeric tensor or array, got dtype {arr.dtype}; encode text as "
            "token ids and categories as numbers first"
        )
    arr = np.ascontiguousarray(arr)
    if not arr.flags.writeable:  # e.g. a pandas frame's read-only view: torch warns on those
        arr = arr.copy()
    return torch.from_numpy(arr)


def _raw_output(out: Any) -> torch.Tensor:
    """Pick the score tensor out of the documented output forms."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(out))
    if isinstance(out, dict):
        if "logits" in out:
            return _raw_output(out["logits"])
        if out:
            return _raw_output(next(iter(out.values())))
    if hasattr(out, "logits") and out.logits is not None:
        return _raw_output(out.logits)
    if isinstance(out, (tuple, list)) and out:
        return _raw_output(out[0])
    raise ModelError(
        f"the model returned {type(out).__name__}; expected a tensor, an array, a tuple whose "
        "first item is the scores, a dict with 'logits', or an object with .logits. Pass "
        "output=callable to pick the scores yourself"
    )


def _is_estimator(obj: Any) -> bool:
    return not isinstance(obj, nn.Module) and (
        hasattr(obj, "predict_proba") or (hasattr(obj, "predict") and hasattr(obj, "fit"))
    )


def estimator_input(est: Any, arr: np.ndarray) -> Any:
    """``arr`` as a scikit-learn estimator expects it: a DataFrame with its column names when it
    was fitted on one (else scikit-learn warns on every call), the array otherwise."""
    names = getattr(est, "feature_names_in_", None)
    if names is None or arr.ndim != 2 or arr.shape[1] != len(names):
        return arr
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - an estimator fitted on a DataFrame implies pandas
        return arr
    return pd.DataFrame(arr, columns=list(names), copy=False)


class Model:
    """A uniform view of a model for explanation methods.

    Parameters
    ----------
    model
        A ``torch.nn.Module``, a function of a tensor, a scikit-learn estimator (its
        ``predict_proba`` is used, else ``predict``) or a function of a numpy array.
    output
        ``"logits"`` uses the scores as the model returns them, ``"probs"`` applies a softmax
        over the last axis (a sigmoid for one output per row), a callable maps the raw output.
    backend
        ``"torch"`` or ``"numpy"``: how inputs are handed to a plain callable. ``"auto"`` uses
        torch for modules, numpy for estimators, and for a plain function tries one row as a
        tensor, falling back to numpy when it fails or returns an array.
    reference
        Rows of the data the model knows (its training rows, or a sample of them). Every
        explained row is then checked against their ranges and the verdict stored in
        ``exp.quality["in_distribution"]`` (see :mod:`unveil.core.reference`), so an input in the
        wrong units or far from the data is flagged instead of explained with confidence.
    feature_names, class_names
        Names of the input columns and of the output classes, carried into every
        :class:`~unveil.core.explanation.Explanation` (plots, HTML, saved files). When not given
        they are read from the model: a scikit-learn estimator's ``feature_names_in_`` and
        ``classes_``, or ``feature_names`` / ``class_names`` attributes holding lists of strings
        (the zoo's models carry them). A DataFrame's columns or ``feature_names=`` given to a
        call win over these.
    """

    def __init__(
        self,
        model: Any,
        *,
        output: OutputSpec = "logits",
        backend: Literal["auto", "torch", "numpy"] = "auto",
        reference: Any = None,
        feature_names: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if isinstance(model, Model):
            raise TypeError("already a Model; use as_model() to pass one through")
        if not callable(model) and not _is_estimator(model):
            raise ModelError(f"the model must be callable, got {type(model).__name__}")
        if output not in ("logits", "probs") and not callable(output):
            from ..errors import OptionError

            raise OptionError(f"output must be 'logits', 'probs' or a callable, got {output!r}")
        self.obj = model
        self.output = output
        self.module: nn.Module | None = model if isinstance(model, nn.Module) else None
        if backend == "auto":
            if self.module is not None:
                backend = "torch"
            elif _is_estimator(model):
                backend = "numpy"
        self._backend: str = backend  # "auto" until probed for a plain function
        names = _name_list(feature_names) or known_names(model, "feature")
        self.feature_names: list[str] | None = names
        self.class_names: list[str] | None = _name_list(class_names) or known_names(model, "class")
        self.reference: Reference | None = as_reference(reference, feature_names=names)
        self.n_evals = 0
        #: Called with the number of rows after each evaluation (e.g. a progress bar's
        #: ``update``); ``None`` by default.
        self.on_evaluate: Callable[[int], Any] | None = None
        self._fingerprint: str | None = None

    def with_data(self, rows: Any, *, feature_names: Sequence[str] | None = None,
                  class_names: Sequence[str] | None = None) -> Model:
        """This model with ``rows`` as its reference data (a new :class:`Model`: same object,
        output and backend; names kept unless given). Rows that cannot serve as a reference
        (token ids of another shape, a single row) leave the model as it is."""
        if rows is None:
            return self
        backend: Any = self._backend if self._backend in ("torch", "numpy") else "auto"
        try:
            out = Model(self.obj, output=self.output, backend=backend, reference=rows,
                        feature_names=feature_names or self.feature_names,
                        class_names=class_names or self.class_names)
        except InputError:
            return self
        out.on_evaluate = self.on_evaluate
        return out

    # -- properties -----------------------------------------------------------------------
    @property
    def backend(self) -> str:
        """``"torch"`` or ``"numpy"`` (``"auto"`` until a plain function has been probed)."""
        return self._backend

    @property
    def differentiable(self) -> bool:
        """Whether gradients of the scores with respect to the inputs can be taken."""
        return self._backend == "torch"

    @property
    def device(self) -> torch.device:
        """Device of the model's first parameter or buffer (CPU for other models)."""
        if self.module is not None:
            for p in self.module.parameters():
                return p.device
            for b in self.module.buffers():
                return b.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the model's first floating parameter (float32 otherwise)."""
        if self.module is not None:
            for t in self.module.parameters():
                if t.is_floating_point():
                    return t.dtype
        return torch.float32

    # -- inputs ---------------------------------------------------------------------------
    def prepare(self, x: Any, *, name: str = "inputs") -> torch.Tensor:
        """Validate a batch and move it to the model's device and dtype."""
        t = to_tensor(x, name=name)
        if t.ndim < 2:
            raise InputError(
                f"{name} must be a batch with a leading batch axis, e.g. (N, F) for tables or "
                f"(N, C, H, W) for images; got shape {tuple(t.shape)}. For one sample use x[None]"
            )
        if t.shape[0] == 0:
            raise InputError(f"{name} is an empty batch (shape {tuple(t.shape)})")
        if _looks_like_integer_images(t):
            _warn_once(
                "integer_images",
                f"{name} are integers shaped like images {tuple(t.shape)}; unveil casts them to "
                "float (pixel values as they are, e.g. 0..255). Pass float images scaled as the "
                "model was trained to silence this; token ids are (N, T)",
            )
            t = t.to(dtype=self.dtype)
        if t.is_floating_point():
            if not bool(torch.isfinite(t).all()):
                bad = int((~torch.isfinite(t)).sum())
                raise InputError(
                    f"{name} contain {bad} NaN or infinite values; clean or impute them first"
                )
            t = t.to(device=self.device, dtype=self.dtype)
        elif t.dtype == torch.bool:
            t = t.to(device=self.device, dtype=self.dtype)
        else:
            t = t.to(device=self.device)
        return t

    def _shape_hint(self) -> str:
        if self.module is None:
            return ""
        for name, m in self.module.named_modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                dims = {nn.Conv1d: "L", nn.Conv2d: "H, W", nn.Conv3d: "D, H, W"}[type(m)]
                return f" Its first layer {name} ({type(m).__name__}) expects (N, {m.in_channels}, {dims})."
            if isinstance(m, nn.Linear):
                return f" Its first layer {name} (Linear) expects (N, {m.in_features})."
            if isinstance(m, nn.Embedding):
                return f" Its first layer {name} (Embedding) expects integer token ids (N, T)."
        return ""

    # -- forward --------------------------------------------------------------------------
    def _call_raw(self, x: torch.Tensor) -> Any:
        if self._backend == "auto":
            self._probe_backend(x)
        if self._backend == "torch":
            return self.obj(x)
        arr = x.detach().cpu().numpy()
        fn = self.obj
        if _is_estimator(fn):
            est = fn
            fn = est.predict_proba if hasattr(est, "predict_proba") else est.predict
            out = np.asarray(fn(estimator_input(est, arr)))
        else:
            out = np.asarray(fn(arr))
        if not np.issubdtype(out.dtype, np.number):
            raise ModelError(f"the model returned non-numeric output of dtype {out.dtype}")
        dtype = x.dtype if x.is_floating_point() else torch.float32
        return torch.from_numpy(np.ascontiguousarray(out)).to(device=x.device, dtype=dtype)

    def _probe_backend(self, x: torch.Tensor) -> None:
        try:
            with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                out = self.obj(x[:1])
            # numpy ufuncs accept a tensor and hand one back through __array_wrap__, with a
            # deprecation warning on every call: such a function is a numpy function
            via_numpy = any("__array_wrap__" in str(w.message) for w in caught)
            is_tensor = isinstance(_raw_output(out), torch.Tensor) and not isinstance(out, np.ndarray)
            self._backend = "torch" if is_tensor and not via_numpy else "numpy"
        except Exception:
            self._backend = "numpy"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores for a batch: shape (N, K), or (N,) for a model with one output per row.

        Gradients flow when the backend is torch and grad mode is on. Counts ``N`` evaluations.
        """
        try:
            raw = self._call_raw(x)
        except (UnveilError, StopForward, torch.OutOfMemoryError):
            raise  # ours, a deliberate early stop, or a chunk too large (batching halves it)
        except Exception as exc:
            msg = str(exc)
            first = msg.splitlines()[0] if msg else ""
            if isinstance(exc, RuntimeError) and any(w in msg for w in _SHAPE_WORDS):
                raise InputError(
                    f"the model rejected inputs of shape {tuple(x.shape)}: {first}."
                    f"{self._shape_hint()} Pass a batch shaped like the model's training inputs."
                ) from exc
            raise ModelError(
                f"the model raised {type(exc).__name__} on a batch of shape {tuple(x.shape)}: "
                f"{first or repr(exc)}"
            ) from exc
        out = _raw_output(raw)
        if out.ndim == 0 or out.shape[0] != x.shape[0]:
            raise ModelError(
                f"the model returned shape {tuple(out.shape)} for a batch of {x.shape[0]}; "
                "expected one row of scores per input row"
            )
        if out.ndim > 2:
            out = out.reshape(out.shape[0], -1)
        if not out.is_floating_point():
            out = out.to(torch.float32)
        _check_finite(out, x.shape[0])
        if self.output == "probs":
            out = torch.sigmoid(out) if out.ndim == 1 else torch.softmax(out, dim=-1)
        elif callable(self.output):
            out = self.output(out)
        self.n_evals += int(x.shape[0])
        if self.on_evaluate is not None:
            self.on_evaluate(int(x.shape[0]))
        return out

    __call__ = forward

    @staticmethod
    def select(out: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        """Pick each row's target score: (N, K) and (N,) targets give (N,)."""
        if targets is None:
            return out if out.ndim == 1 else out[:, 0]
        return out.gather(1, targets.view(-1, 1).to(out.device)).squeeze(1)

    def scores(self, x: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        """The target score of each row, shape (N,)."""
        return self.select(self.forward(x), targets)

    # -- targets --------------------------------------------------------------------------
    def resolve_targets(self, target: TargetSpec, outputs: torch.Tensor) -> torch.Tensor | None:
        """Turn a target spec into one class index per row (``None`` for (N,) outputs)."""
        n = outputs.shape[0]
        if outputs.ndim == 1:
            if target is None or (isinstance(target, str) and target == "predicted"):
                return None
            if isinstance(target, int) and target == 0:
                return None
            raise TargetError(
                f"the model returns one score per row (shape {tuple(outputs.shape)}), so target "
                f"must be None or 'predicted', got {target!r}"
            )
        k = outputs.shape[1]
        if target is None:
            raise TargetError(
                f"target=None is only for models with one output per row; this model returns "
                f"{k} scores per row: pass an int in [0, {k}), one per row, or 'predicted'"
            )
        if isinstance(target, str):
            if target != "predicted":
                raise TargetError(f"target must be an int, a sequence of ints or 'predicted', got {target!r}")
            return outputs.argmax(dim=1)
        if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
            t = torch.full((n,), int(target), dtype=torch.long, device=outputs.device)
        else:
            try:
                t = torch.as_tensor(np.asarray(target.cpu() if isinstance(target, torch.Tensor) else target))
            except Exception as exc:
                raise TargetError(f"cannot read target {target!r} as integers") from exc
            if t.is_floating_point() or t.dtype == torch.bool or t.ndim != 1 or t.shape[0] != n:
                raise TargetError(
                    f"target must be one integer per row ({n} rows); got {t.dtype} of shape "
                    f"{tuple(t.shape)}"
                )
            t = t.to(dtype=torch.long, device=outputs.device)
        if bool(((t < 0) | (t >= k)).any()):
            bad = t[(t < 0) | (t >= k)][0].item()
            raise TargetError(
                f"target {bad} is out of range: the model returns {k} scores per row, so targets "
                f"must be in [0, {k - 1}]"
            )
        return t

    # -- gradients ------------------------------------------------------------------------
    def require_gradients(self, method: str) -> None:
        """Raise :class:`NotDifferentiableError` if this model gives no gradients."""
        if self._backend == "auto":
            raise RuntimeError("probe the backend with a forward call first")  # pragma: no cover
        if not self.differentiable:
            raise NotDifferentiableError(
                f"{method!r} needs gradients, but this model takes numpy arrays "
                f"({type(self.obj).__name__}); use a perturbation method instead: 'occlusion', "
                "'feature_ablation', 'kernel_shap', 'permutation_shapley' or 'lime'"
            )

    def gradient(
        self, x: torch.Tensor, targets: torch.Tensor | None, *, method: str = "gradient"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Target scores (N,) and their gradient with respect to ``x`` (shaped like ``x``)."""
        self.require_gradients(method)
        if not x.is_floating_point():
            raise InputError(
                f"{method!r} differentiates with respect to the inputs, which are integers "
                f"({x.dtype}); for token ids pass layer= the embedding layer"
            )
        xg = x.detach().requires_grad_(True)
        with torch.enable_grad():
            s = self.scores(xg, targets)
            if not s.requires_grad:
                raise NotDifferentiableError(
                    f"the model's output does not depend differentiably on its input (it may "
                    f"detach, round, or call numpy inside forward), so {method!r} cannot run; "
                    "use a perturbation method such as 'occlusion' or 'kernel_shap'"
                )
            (g,) = torch.autograd.grad(s.sum(), xg)
        return s.detach(), g

    # -- structure ------------------------------------------------------------------------
    def layer(self, name: str | nn.Module) -> nn.Module:
        """The submodule at a dotted name (or the module itself, checked to be part of the
        model); the error lists the closest names."""
        if self.module is None:
            from ..errors import LayerNotFoundError

            raise LayerNotFoundError(
                f"layer {name if isinstance(name, str) else type(name).__name__!r} was asked of a "
                "model that is not a torch.nn.Module"
            )
        return get_submodule(self.module, name)

    def guard(self, *, freeze: bool = True) -> Any:
        """Context: eval mode and frozen parameters, both restored afterwards."""
        return model_guard(self.module, freeze=freeze)

    def fingerprint(self) -> str:
        """A SHA-256 over the model's parameters and buffers (or estimator state), cached."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            if self.module is not None:
                h.update(type(self.module).__qualname__.encode())
                for k, v in sorted(self.module.state_dict().items()):
                    h.update(k.encode())
                    h.update(str(tuple(v.shape)).encode())
                    h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
            else:
                h.update(type(self.obj).__qualname__.encode())
                for k, v in sorted(getattr(self.obj, "__dict__", {}).items()):
                    if isinstance(v, np.ndarray) and v.dtype != object:
                        h.update(k.encode())
                        h.update(np.ascontiguousarray(v).tobytes())
                    elif isinstance(v, (int, float, str, bool)):
                        h.update(f"{k}={v!r}".encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint


_NAME_ATTRIBUTES = {
    "feature": ("feature_names_in_", "feature_names"),
    "class": ("classes_", "class_names"),
}


def _name_list(names: Any) -> list[str] | None:
    if names is None:
        return None
    return [str(n) for n in names]


def known_names(obj: Any, kind: Literal["feature", "class"]) -> list[str] | None:
    """The ``kind`` names a model object carries, or ``None``.

    Read from a scikit-learn estimator's ``feature_names_in_`` / ``classes_`` and from
    ``feature_names`` / ``class_names`` attributes (the zoo's modules carry these); only a
    list, tuple or 1-d array of strings (or, for classes, of numbers) counts.
    """
    for attr in _NAME_ATTRIBUTES[kind]:
        try:
            value = getattr(obj, attr, None)
        except Exception:  # a property that raises (e.g. an unfitted estimator)
            continue
        if isinstance(value, np.ndarray) and value.ndim == 1 and value.size:
            value = value.tolist()
        if not isinstance(value, (list, tuple)) or not value:
            continue
        ok = (str,) if kind == "feature" else (str, int, np.integer, bool)
        if all(isinstance(v, ok) for v in value):
            return [str(v) for v in value]
    return None


def frame_columns(x: Any) -> list[str] | None:
    """The column names of a pandas DataFrame (``None`` for anything else), without importing
    pandas."""
    if type(x).__module__.split(".")[0] != "pandas" or not hasattr(x, "columns"):
        return None
    cols = list(x.columns)
    return [str(c) for c in cols] if getattr(x, "ndim", 0) == 2 else None


def token_strings(obj: Any, ids: Any) -> list[list[str]] | None:
    """Token strings of each row of ``ids`` (N, T) from ``obj.tokenizer`` (a Hugging Face
    tokenizer's ``convert_ids_to_tokens``), or ``None`` when the model carries no tokenizer."""
    tok = getattr(obj, "tokenizer", None)
    convert = getattr(tok, "convert_ids_to_tokens", None)
    arr = np.asarray(ids)
    if convert is None or arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        return None
    try:
        return [[str(t) for t in convert([int(i) for i in row])] for row in arr]
    except Exception:  # not a tokenizer after all: no strings, not an error
        return None


def _check_finite(out: torch.Tensor, n: int) -> None:
    """Raise :class:`NonFiniteOutputError` naming the rows whose scores are NaN or infinite."""
    finite = torch.isfinite(out.detach())
    if bool(finite.all()):
        return
    bad_rows = (~finite).reshape(n, -1).any(dim=1).nonzero().flatten().tolist()
    raise NonFiniteOutputError(bad_rows, n)


def _looks_like_integer_images(t: torch.Tensor) -> bool:
    """Integer (N, C, H, W) with a few channels: images, not token ids (which are (N, T))."""
    return (not t.is_floating_point() and t.dtype != torch.bool and t.ndim == 4
            and t.shape[1] <= 4)


_WARNED: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, UserWarning, stacklevel=4)


def as_model(model: Any, **options: Any) -> Model:
    """Wrap ``model`` in a :class:`Model` (a ``Model`` passes through unchanged)."""
    if isinstance(model, Model):
        return model
    return Model(model, **options)
