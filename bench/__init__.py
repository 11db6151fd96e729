"""Benchmarks, kept out of the default test run: `python -m bench.placement`."""
