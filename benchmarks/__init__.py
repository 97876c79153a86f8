"""Heliox fleet-scale benchmark (issue 7): ``python -m benchmarks.run``. See docs/performance.md."""
