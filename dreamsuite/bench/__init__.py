"""Benchmarks: each prints a table of ratios measured in one run (``dreamsuite bench ...``)."""
