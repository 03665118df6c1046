"""Benchmarks for unveil: ``make bench`` (``python -m benchmarks.run``)."""
