"""Benchmarks: each module here has a ``main()`` that prints ratios (never asserts)."""
