"""Benchmarks of bayesnn, run as modules: ``python -m benchmarks.<name>`` (see common.py)."""
