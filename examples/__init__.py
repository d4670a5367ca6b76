"""Bundled example worker projects and the demo (`python -m examples.demo`)."""
