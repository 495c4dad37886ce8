"""Benchmark suites behind `hedge bench` (each `run()` returns a JSON-serialisable dict)."""
