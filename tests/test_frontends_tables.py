"""Reading a model's data as a table (``unveil.frontends.tables``): text columns coded for
``preprocess=``, labels taken out, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unveil.errors import InputError
from unveil.frontends.tables import encode_cells, read_data_file, split_names


def test_text_columns_are_coded_in_the_given_or_sorted_order() -> None:
    cells = [["1.5", "south", "x"], ["2", "north", "y"], ["-3", "east", "x"]]
    t = encode_cells(["v", "region", "g"], cells, "t", known={"region": ["north", "south", "east"]})
    assert t.X.tolist() == [[1.5, 1, 0], [2, 0, 1], [-3, 2, 0]]
    assert t.categories == {"region": ["north", "south", "east"], "g": ["x", "y"]}
    with pytest.raises(InputError, match=r"column 'region' holds \['west'\]"):
        encode_cells(["region"], [["west"]], "t", known={"region": ["north"]})


def test_a_word_among_numbers_is_a_typo_naming_its_cell() -> None:
    cells = [[str(k)] for k in range(9)] + [["lots"]]
    with pytest.raises(InputError, match=r"row 10, column 'n' is not a number: 'lots'"):
        encode_cells(["n"], cells, "t")
    with pytest.raises(InputError, match="row 2, column 'n' is empty"):
        encode_cells(["n"], [["1"], [""]], "t")


def test_csv_with_labels_npy_and_parquet(tmp_path: Path) -> None:
    csv = tmp_path / "d.csv"
    csv.write_text("income,region,outcome\n1,north,approved\n2,south,rejected\n3,north,approved\n")
    t = read_data_file(csv, label_column="outcome", class_names=["rejected", "approved"])
    assert t.names == ["income", "region"] and t.labels.tolist() == [1, 0, 1]  # class indices
    assert t.describe() == "a table of 3 rows and 2 columns"
    t2 = read_data_file(csv, label_column="2")
    assert t2.label_names == ["approved", "rejected"] and t2.labels.tolist() == [0, 1, 0]
    a = np.arange(6.0).reshape(3, 2)
    np.save(tmp_path / "d.npy", a)
    t3 = read_data_file(tmp_path / "d.npy", names=["p", "q"])
    assert t3.names == ["p", "q"] and np.array_equal(t3.X, a)
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    pd.DataFrame({"x": [1.0, 2.0], "c": ["b", "a"]}).to_parquet(tmp_path / "d.parquet")
    t4 = read_data_file(tmp_path / "d.parquet")
    assert t4.X.tolist() == [[1, 1], [2, 0]] and t4.categories == {"c": ["a", "b"]}


def test_names_and_bad_files(tmp_path: Path) -> None:
    assert split_names(" a, b ,c") == ["a", "b", "c"]
    with pytest.raises(InputError, match="comma-separated"):
        split_names("a,,b")
    with pytest.raises(InputError, match="no such file"):
        read_data_file(tmp_path / "none.csv")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(InputError, match="unsupported data file '.json'"):
        read_data_file(tmp_path / "x.json")
