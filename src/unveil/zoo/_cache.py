"""The zoo's weight cache: safetensors files with JSON metadata, written atomically under a lock.

Layout: ``<cache>/<name>.safetensors`` beside ``<cache>/<name>.lock``. The safetensors header
holds the identity of the weights (architecture, recipe, seed, library versions) as a JSON string
under :data:`IDENTITY_KEY`; a file whose identity differs from the code's, whose tensors do not
fit the architecture, or that cannot be read, is retrained and replaced. Nothing is unpickled.

Readers need no lock: a file only ever appears whole, through :func:`os.replace`. Writers take an
exclusive ``fcntl.flock`` on the ``.lock`` file, then look again, so of several processes asking at
once (pytest-xdist workers), one trains and the others load its result.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

__all__ = ["IDENTITY_KEY", "INFO_KEY", "cache_path", "load_or_train", "resolve_cache_dir"]

logger = logging.getLogger("unveil.zoo")

IDENTITY_KEY = "unveil.zoo.identity"
INFO_KEY = "unveil.zoo.info"

Tensors = dict[str, torch.Tensor]
Template = Mapping[str, tuple[tuple[int, ...], torch.dtype]]


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the zoo's cache folder.

    The first of: ``cache_dir``; the ``UNVEIL_CACHE`` environment variable;
    ``$XDG_CACHE_HOME/unveil``; ``~/.cache/unveil``. Empty variables count as unset.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("UNVEIL_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path(os.path.expanduser("~")) / ".cache"
    return base / "unveil"


def cache_path(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the path of the cached weights of zoo model ``name``."""
    return resolve_cache_dir(cache_dir) / f"{name}.safetensors"


def _canonical(metadata: Mapping[str, object]) -> str:
    return json.dumps(metadata, sort_keys=True, separators=(",", ":"))


def _fits(tensors: Mapping[str, torch.Tensor], template: Template) -> bool:
    if set(tensors) != set(template):
        return False
    return all((tuple(t.shape), t.dtype) == template[key] for key, t in tensors.items())


def _read(path: Path, identity: Mapping[str, object], template: Template) -> Tensors | None:
    """Return the cached tensors if ``path`` holds weights of this identity, else ``None``."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            stored = header.get(IDENTITY_KEY)
            if stored is None or json.loads(stored) != json.loads(_canonical(identity)):
                logger.info("cached %s was made by a different recipe; retraining", path)
                return None
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (OSError, ValueError, SafetensorError) as exc:
        logger.warning("cannot read cached %s (%s); retraining", path, exc)
        return None
    if not _fits(tensors, template):
        logger.warning("cached %s does not fit the architecture; retraining", path)
        return None
    return tensors


def _write_atomic(
    path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> None:
    """Write ``tensors`` to a temporary file beside ``path``, then move it into place."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    os.close(fd)
    try:
        payload = {key: t.detach().to("cpu").contiguous().clone() for key, t in tensors.items()}
        save_file(payload, tmp_name, metadata=dict(metadata))
        os.chmod(tmp_name, 0o644)
        with open(tmp_name, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``lock_path`` (POSIX ``flock``; a no-op elsewhere)."""
    with open(lock_path, "a+b") as handle:
        if sys.platform == "win32":  # pragma: no cover - no flock; atomic replace still holds
            yield
            return
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def load_or_train(
    name: str,
    identity: Mapping[str, object],
    train: Callable[[], tuple[Tensors, Mapping[str, object]]],
    template: Template,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    retrain: bool = False,
) -> Tensors:
    """Return the weights of zoo model ``name``, from the cache or freshly trained.

    Parameters
    ----------
    name : str
        Zoo name; the file is ``<cache>/<name>.safetensors``.
    identity : mapping
        JSON-serialisable description of the weights; a cached file is used only if equal.
    train : callable
        Trains and returns ``(state_dict, info)``; ``info`` is stored but not compared.
    template : mapping
        Expected ``(shape, dtype)`` of each tensor.
    cache_dir : path-like, optional
        Overrides :func:`resolve_cache_dir`.
    retrain : bool, default False
        Train and overwrite even if a valid file exists.

    Returns
    -------
    dict of str to torch.Tensor
        A state dict.
    """
    directory = resolve_cache_dir(cache_dir)
    path = directory / f"{name}.safetensors"
    if not retrain:
        found = _read(path, identity, template)
        if found is not None:
            logger.debug("loaded zoo model %s from %s", name, path)
            return found
    with contextlib.ExitStack() as stack:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            stack.enter_context(_exclusive(directory / f"{name}.lock"))
        except OSError as exc:
            logger.warning("cannot use the zoo cache %s (%s); not caching", directory, exc)
            return train()[0]
        if not retrain:  # another process may have written it while this one waited
            found = _read(path, identity, template)
            if found is not None:
                logger.debug("loaded zoo model %s from %s", name, path)
                return found
        tensors, info = train()
        metadata = {IDENTITY_KEY: _canonical(identity), INFO_KEY: _canonical(info)}
        try:
            _write_atomic(path, tensors, metadata)
        except OSError as exc:
            logger.warning("cannot write %s (%s); the weights are not cached", path, exc)
        return tensors
