"""What the front ends (the CLI and the dashboard) share: loading models (:mod:`.loading`),
reading inputs from files (:mod:`.inputs`), settings given as text (:mod:`.arguments`), and how
messages name the caller's settings (:mod:`.wording`: keyword arguments, or the CLI's flags).

This package sits in the front-end layer, beside :mod:`unveil.cli` and :mod:`unveil.serve`; it
may import every layer below.
"""

from __future__ import annotations

from .arguments import parse_option, parse_rows, parse_target
from .inputs import Inputs, Table, load_inputs, load_table, read_csv, read_image, read_npy
from .loading import LoadedModel, load_model, load_object, zoo_names
from .wording import PYTHON, Wording

__all__ = ["PYTHON", "Inputs", "LoadedModel", "Table", "Wording", "load_inputs", "load_model", "load_object", "load_table",
           "parse_option", "parse_rows", "parse_target", "read_csv", "read_image", "read_npy", "zoo_names"]
