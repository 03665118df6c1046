"""uv.load trusts nothing in the file: every malformed archive is an InputError, never a crash."""

from __future__ import annotations

import inspect
import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

import unveil as uv
from unveil.core import _archive
from unveil.core.explanation import Explanation
from unveil.errors import InputError, OptionError


def _exp() -> Explanation:
    rng = np.random.default_rng(0)
    e = Explanation(
        values=rng.normal(size=(3, 5)).astype(np.float32), inputs=rng.normal(size=(3, 5)),
        method="saliency", targets=np.array([0, 1, 1]), outputs=np.array([0.5, 0.2, 0.9]),
        params={"abs": True}, seed=3, n_evals=6, timings={"total": 0.25},
        feature_names=list("abcde"), class_names=["no", "yes"],
    )
    e.extras["curve"] = np.arange(6.0).reshape(3, 2)
    return e


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, allow_pickle=True)
    return buf.getvalue()


def _meta(path: Path) -> dict:
    raw = np.lib.format.read_array(io.BytesIO(_members(path)["__meta__.npy"]))
    return json.loads(raw.tobytes())


def _write(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _with(tmp_path: Path, *, meta: dict | bytes | None = None, drop: tuple[str, ...] = (),
          **arrays: np.ndarray) -> Path:
    """A saved valid explanation with members replaced, dropped or added."""
    src = _exp().save(tmp_path / "good.npz")
    members = {k: v for k, v in _members(src).items() if k[:-4] not in drop}
    if meta is not None:
        raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
        members["__meta__.npy"] = _npy(np.frombuffer(raw, dtype=np.uint8))
    for k, a in arrays.items():
        members[(k if k == "__meta__" else k.replace("__", ".")) + ".npy"] = _npy(a)
    return _write(tmp_path / "bad.npz", members)


def test_round_trip_declares_arrays_and_renders(tmp_path: Path) -> None:
    e = _exp()
    back = uv.load(e.save(tmp_path / "e.npz"))
    assert np.array_equal(back.values, e.values) and back.values.dtype == np.float32
    assert np.array_equal(back.extras["curve"], e.extras["curve"])
    meta = _meta(tmp_path / "e.npz")
    assert meta["arrays"]["values"] == {"dtype": "<f4", "shape": [3, 5]}
    assert meta["extras"] == ["curve"]
    assert repr(back) == repr(e) and repr(back).startswith("Explanation(method='saliency'")
    page = back.to_html()
    assert "<table" in page or "<img" in page or "<svg" in page
    assert back.feature_names == list("abcde") and back.seed == 3


def test_old_files_without_declarations_still_load(tmp_path: Path) -> None:
    meta = _meta(_exp().save(tmp_path / "e.npz"))
    del meta["arrays"], meta["extras"], meta["meta"]
    back = uv.load(_with(tmp_path, meta=meta))
    assert back.values.shape == (3, 5) and back.meta == {} and "curve" in back.extras


def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path: Path) -> None:
    e = _exp()
    e.params["pattern"] = "[{" * 5000 + '\\"['
    e.meta["nested"] = [[[[{"a": [1]}]]]]
    back = uv.load(e.save(tmp_path / "e.npz"))
    assert back.params["pattern"] == e.params["pattern"] and back.meta["nested"] == [[[[{"a": [1]}]]]]
    assert _archive._depth(json.dumps([e.params, "]]]", [[1], [[2]]]])) == 4


@pytest.mark.parametrize("drop,fragment", [
    (("__meta__",), "not an unveil Explanation file"),
    (("values",), "required array 'values' is missing"),
    (("inputs",), "required array 'inputs' is missing"),
    (("targets",), "array 'targets' declared in the metadata is missing"),
    (("extras.curve",), "array 'extras.curve' declared in the metadata is missing"),
])
def test_missing_member(tmp_path: Path, drop: tuple[str, ...], fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        uv.load(_with(tmp_path, drop=drop))


@pytest.mark.parametrize("field", ["method", "format", "params", "n_evals", "class_names"])
def test_missing_metadata_field(tmp_path: Path, field: str) -> None:
    meta = _meta(_exp().save(tmp_path / "e.npz"))
    del meta[field]
    with pytest.raises(InputError, match=f"metadata field '{field}' is missing"):
        uv.load(_with(tmp_path, meta=meta))


@pytest.mark.parametrize("field,value,fragment", [
    ("method", 3, "'method' must be a str"),
    ("seed", "3", "'seed' must be an int or null"),
    ("seed", True, "'seed' must be an int or null"),
    ("n_evals", -1, "'n_evals' must be an int >= 0"),
    ("timings", {"total": "fast"}, "'timings' must be an object of numbers"),
    ("params", [1], "'params' must be an object"),
    ("quality", None, "'quality' must be an object"),
    ("groups", [], "'groups' must be an object or null"),
    ("groups", {"n_groups": "4"}, "'groups.n_groups' must be an int >= 0"),
    ("feature_names", ["a", 2], "'feature_names' must be a list of str or null"),
    ("class_names", "yes", "'class_names' must be a list of str or null"),
    ("extras", ["curve", 1], "'extras' must be a list of str"),
    ("extras", ["other"], "the metadata lists extras"),
    ("format", "unveil.explanation/99", "format 'unveil.explanation/99', expected"),
    ("arrays", {"values": {"dtype": "<f4"}}, "declares array 'values' without a dtype"),
])
def test_metadata_schema(tmp_path: Path, field: str, value: object, fragment: str) -> None:
    meta = _meta(_exp().save(tmp_path / "e.npz"))
    meta[field] = value
    with pytest.raises(InputError, match=fragment):
        uv.load(_with(tmp_path, meta=meta))


@pytest.mark.parametrize("raw,fragment", [
    (b'{"format": "unveil.explanation/1", ', "metadata is not valid JSON"),
    (b"[1, 2]", "metadata is a JSON list, expected an object"),
    (b'{"method": "\xff\xfe"}', r"metadata is not UTF-8 \(byte 12\)"),
    (b"[" * 10**4 + b"]" * 10**4, "metadata nests deeper than 64 levels"),
    (b'{"a": ' * 10**4 + b"1" + b"}" * 10**4, "metadata nests deeper than 64 levels"),
    (b'{"n": ' + b"9" * 5000 + b"}", "metadata is not valid JSON"),
])
def test_bad_metadata_text(tmp_path: Path, raw: bytes, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        uv.load(_with(tmp_path, meta=raw))


def test_metadata_must_be_a_byte_vector(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="metadata is stored as float64"):
        uv.load(_with(tmp_path, __meta__=np.zeros(4)))


@pytest.mark.parametrize("arrays,fragment", [
    ({"values": np.zeros((3, 5))}, r"array 'values' is <f8 \[3, 5\], the metadata declares '<f4' \[3, 5\]"),
    ({"values": np.zeros((3, 4), np.float32)}, r"array 'values' is <f4 \[3, 4\], the metadata"),
    ({"targets": np.array([0, 1])}, "array 'targets' is <i8 \\[2\\]"),
    ({"extras__more": np.zeros(2)}, "array 'extras.more' is not declared in the metadata"),
])
def test_arrays_disagree_with_metadata(tmp_path: Path, arrays: dict, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        uv.load(_with(tmp_path, **arrays))


@pytest.mark.parametrize("arrays,fragment", [
    ({"inputs": np.zeros((4, 5))}, "'inputs' has 4 rows, 'values' has 3"),
    ({"targets": np.array([[0], [1], [1]])}, r"'targets' has shape \(3, 1\), expected \(3,\)"),
    ({"delta": np.zeros(2)}, r"'delta' has shape \(2,\), expected \(3,\)"),
    ({"stderr": np.zeros((2, 5))}, "'stderr' has shape \\(2, 5\\), expected 3 rows"),
    ({"values": np.float32(1.0)}, r"'values' has shape \(\), expected \(N, ...\)"),
])
def test_arrays_disagree_with_each_other_in_old_files(tmp_path: Path, arrays: dict,
                                                      fragment: str) -> None:
    meta = _meta(_exp().save(tmp_path / "e.npz"))
    del meta["arrays"]
    with pytest.raises(InputError, match=fragment):
        uv.load(_with(tmp_path, meta=meta, **arrays))


@pytest.mark.parametrize("bad", [np.array([{"a": 1}, None, 2], dtype=object),
                                 np.array(["a", "b", "c"]), np.zeros(3, dtype="V8")])
def test_non_numeric_arrays_are_refused_before_reading(tmp_path: Path, bad: np.ndarray) -> None:
    with pytest.raises(InputError, match="array 'targets' is .*only bool, integer and float arrays are loaded"):
        uv.load(_with(tmp_path, targets=bad))


def test_object_array_is_never_unpickled(tmp_path: Path, monkeypatch) -> None:
    reads: list[np.ndarray] = []
    real = np.lib.format.read_array

    def counted(*a: object, **k: object) -> np.ndarray:
        reads.append(real(*a, **k))  # type: ignore[arg-type]
        return reads[-1]

    path = _with(tmp_path, values=np.array([object()] * 3, dtype=object))
    monkeypatch.setattr(np.lib.format, "read_array", counted)
    with pytest.raises(InputError, match=r"array 'values' is an object array \(never unpickled\)"):
        uv.load(path)
    assert len(reads) == 1 and reads[0].dtype == np.uint8  # only the metadata was read


def test_array_header_must_fit_its_member(tmp_path: Path) -> None:
    members = _members(_exp().save(tmp_path / "e.npz"))
    members["values.npy"] = members["values.npy"][:-8]  # one float short of the declared shape
    with pytest.raises(InputError, match=r"array 'values' of shape \(3, 5\) and dtype float32 does not fit"):
        uv.load(_write(tmp_path / "bad.npz", members))
    members["values.npy"] = b"\x93NUMPY\x01\x00\x04\x00{'x'"
    with pytest.raises(InputError, match="array 'values' has a malformed .npy header"):
        uv.load(_write(tmp_path / "bad.npz", members))


def _bomb(path: Path, mb: int) -> Path:
    """A valid explanation plus an extra member of ``mb`` MiB of zeros (deflated to ~mb KiB)."""
    members = _members(_exp().save(path.with_name("good.npz")))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        header = _npy(np.zeros(0, np.uint8))  # a header, then a lot of zeros
        with zf.open("extras.zeros.npy", "w", force_zip64=True) as fh:
            fh.write(header)
            chunk = bytes(1 << 20)
            for _ in range(mb):
                fh.write(chunk)
    return path


def test_zip_bomb_is_refused_before_decompression(tmp_path: Path, monkeypatch) -> None:
    path = _bomb(tmp_path / "bomb.npz", 64)
    assert path.stat().st_size < 1 << 20  # 64 MiB of zeros in well under 1 MiB
    opened: list[str] = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open",
                        lambda self, name, *a, **k: opened.append(str(name)) or real_open(self, name, *a, **k))  # type: ignore[func-returns-value]  # record, then open
    with pytest.raises(InputError, match=r"would decompress to \d+ bytes, more than max_bytes=33554432"):
        uv.load(path, max_bytes=32 * 1024**2)
    assert opened == []  # refused from the central directory alone
    with pytest.raises(InputError, match="would decompress to"):
        Explanation.load(path, max_bytes=32 * 1024**2)


def test_default_size_cap() -> None:
    assert inspect.signature(uv.load).parameters["max_bytes"].default == 2 * 1024**3
    assert inspect.signature(Explanation.load).parameters["max_bytes"].default == 2 * 1024**3
    assert _archive.DEFAULT_MAX_BYTES == 2 * 1024**3
    with pytest.raises(OptionError, match="max_bytes must be an int >= 0"):
        uv.load("whatever.npz", max_bytes=-1)


def _patch_size(data: bytes, member: str, size: int) -> bytes:
    """Rewrite the uncompressed size the central directory declares for ``member``."""
    name = member.encode()
    at = 0
    while True:
        at = data.index(b"PK\x01\x02", at)
        n = struct.unpack("<H", data[at + 28:at + 30])[0]
        if data[at + 46:at + 46 + n] == name:
            return data[:at + 24] + struct.pack("<I", size) + data[at + 28:]
        at += 46


def test_absurd_compression_ratio(tmp_path: Path) -> None:
    good = _exp().save(tmp_path / "e.npz").read_bytes()
    bad = tmp_path / "ratio.npz"
    bad.write_bytes(_patch_size(good, "values.npy", 2**31))
    with pytest.raises(InputError, match="member 'values.npy' claims a compression ratio above 1100"):
        uv.load(bad)


def test_not_a_zip_and_truncated(tmp_path: Path) -> None:
    (tmp_path / "text.npz").write_text("hello, I am not an archive")
    with pytest.raises(InputError, match=r"text.npz: not a zip archive"):
        uv.load(tmp_path / "text.npz")
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(InputError, match="not a zip archive"):
        uv.load(tmp_path / "empty.npz")
    good = _exp().save(tmp_path / "e.npz").read_bytes()
    for cut in (10, len(good) // 2, len(good) - 30):
        (tmp_path / "cut.npz").write_bytes(good[:cut])
        with pytest.raises(InputError, match="corrupt or truncated archive"):
            uv.load(tmp_path / "cut.npz")


def test_corrupt_member_data(tmp_path: Path) -> None:
    src = _exp().save(tmp_path / "e.npz")
    with zipfile.ZipFile(src) as zf:
        info = zf.getinfo("values.npy")
    data = bytearray(src.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for i in range(start + 4, start + info.compress_size - 4):
        data[i] ^= 0x5A
    (tmp_path / "flip.npz").write_bytes(bytes(data))
    with pytest.raises(InputError, match="corrupt or truncated archive"):
        uv.load(tmp_path / "flip.npz")


def test_unexpected_members(tmp_path: Path) -> None:
    members = _members(_exp().save(tmp_path / "e.npz"))
    with pytest.raises(InputError, match="unexpected member 'payload.pkl'"):
        uv.load(_write(tmp_path / "bad.npz", {**members, "payload.pkl": b"x"}))
    dup = _write(tmp_path / "dup.npz", members)
    with zipfile.ZipFile(dup, "a") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.writestr("values.npy", members["values.npy"])
    with pytest.raises(InputError, match="member 'values.npy' appears twice"):
        uv.load(dup)


def test_missing_file_is_a_file_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        uv.load(tmp_path / "nope.npz")


def test_save_refuses_what_load_would_refuse(tmp_path: Path) -> None:
    e = _exp()
    e.extras["words"] = np.array(["a", "b"], dtype=object)
    with pytest.raises(InputError, match="cannot save array 'extras.words' of dtype object"):
        e.save(tmp_path / "e.npz")
    e = _exp()
    deep: object = 1
    for _ in range(100):
        deep = [deep]
    e.meta["deep"] = deep
    with pytest.raises(InputError, match="metadata nests deeper than 64 levels"):
        e.save(tmp_path / "e.npz")


def test_cli_prints_one_line_for_a_bad_file(tmp_path: Path, capsys) -> None:
    from unveil.cli import main

    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "-m", "zoo:breast_cancer_mlp", "-e", str(tmp_path / "bad.npz")])
    err = capsys.readouterr().err
    assert info.value.code == 1
    assert err.startswith(f"unveil: error: cannot load {tmp_path / 'bad.npz'}: corrupt or truncated")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def _saved(tmp_path: Path, **kw: object) -> Path:
    return Explanation(method="saliency", **kw).save(tmp_path / "e.npz")  # type: ignore[arg-type]


_IMG = np.ones((2, 3, 8, 8))


@pytest.mark.parametrize("kw,fragment", [
    (dict(values=np.ones((2, 5)), inputs=np.ones((2, 5)), targets=np.array([0.5, 1.0])),
     "'targets' has dtype float64, expected integers"),
    (dict(values=np.ones(2), inputs=np.ones(2)), r"'values' has shape \(2,\), expected \(N, ...\)"),
    (dict(values=np.ones((2, 0)), inputs=np.ones((2, 0))), "with a non-empty sample"),
    (dict(values=np.ones((2, 5)), inputs=np.ones((2, 5)), modality="image"),
     r"image inputs of shape \(2, 5\), expected \(N, H, W\) or \(N, C, H, W\)"),
    (dict(values=np.ones((2, 5)), inputs=_IMG, modality="image"),
     r"values of shape \(2, 5\) cannot be drawn over images of shape \(3, 8, 8\)"),
    (dict(values=np.ones((2, 3, 4)), inputs=np.ones((2, 6))),
     r"values of shape \(2, 3, 4\) over table rows of 6 features"),
    (dict(values=np.ones((2, 4)), inputs=np.full((2, 4), np.nan), modality="text"),
     "text inputs \\(token ids\\) hold NaN or infinite values"),
    (dict(values=np.ones((2, 4)), inputs=_IMG, modality="image",
          groups={"n_groups": 4, "labels": np.full((1, 3, 8, 8), 9)}),
     "'groups.labels' range from 9 to 9, expected -1 to 3"),
    (dict(values=np.ones((2, 4)), inputs=_IMG, modality="image",
          groups={"n_groups": 4, "labels": np.zeros((3, 3, 8, 8), np.int64)}),
     r"'groups.labels' is int64 \(3, 3, 8, 8\), expected integers of shape \(1 or 2"),
    (dict(values=np.ones((2, 4)), inputs=np.ones((2, 6)),
          groups={"n_groups": 4, "masks": np.ones((3, 6), bool)}),
     r"'groups.masks' has shape \(3, 6\), expected \(4, \*\(6,\)\)"),
    (dict(values=np.ones((2, 4)), inputs=np.ones((2, 6)), groups={"masks": np.ones((4, 6), bool)}),
     "group labels or masks are stored without 'groups.n_groups'"),
    (dict(values=np.ones((2, 4)), inputs=np.ones((2, 6)), groups={"n_groups": 4, "names": ["a"]}),
     "'groups.names' has 1 names for 4 groups"),
])
def test_files_the_report_could_not_draw(tmp_path: Path, kw: dict, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        uv.load(_saved(tmp_path, **kw))


@pytest.mark.parametrize("kw", [
    dict(values=np.ones((2, 4)), inputs=_IMG, modality="image",
         groups={"n_groups": 4, "kind": "patches", "labels": np.arange(-1, 3).repeat(48).reshape(1, 3, 8, 8)}),
    dict(values=np.ones((2, 4)), inputs=np.ones((2, 6)),
         groups={"n_groups": 4, "names": list("abcd"), "masks": np.eye(4, 6, dtype=bool)}),
    dict(values=np.ones((2, 64)), inputs=_IMG, modality="image"),
    dict(values=np.ones((2, 1, 4, 4)), inputs=_IMG, modality="image"),
    dict(values=np.ones((2, 4)), inputs=np.ones((2, 4, 8)), modality="text"),
])
def test_unusual_but_valid_files_load_and_render(tmp_path: Path, kw: dict) -> None:
    back = uv.load(_saved(tmp_path, **kw))
    assert back.values.shape == kw["values"].shape
    assert back.to_html().count("uv-sample") >= 2 and repr(back).startswith("Explanation(")


def test_complex_arrays_are_neither_saved_nor_loaded(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot save array 'values' of dtype complex128"):
        _saved(tmp_path, values=np.ones((2, 5), complex), inputs=np.ones((2, 5)))
    with pytest.raises(InputError, match="array 'values' is of dtype complex128; only bool"):
        uv.load(_with(tmp_path, values=np.ones((3, 5), complex)))
