"""Benchmarks: `python -m rubiks_jax.bench SUITE` (suites: op)."""
