"""Benchmarks of cloudmirror against peers on one local emulator, in one run.

`python -m bench.run --help`; results and method in docs/benchmarks.md.
"""
