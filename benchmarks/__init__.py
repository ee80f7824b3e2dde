"""Benchmarks of aioiothub: each ``benchmarks/<name>.py`` is a script; see ``benchmarks/README.md``."""
