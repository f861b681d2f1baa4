"""Test tools shipped for the tests, the demo and the benchmarks, never imported by the pipeline itself:
the Replicate emulator, a sample shop (Laravel-shaped tables, generated images) and its image server."""
