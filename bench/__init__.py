"""Benchmarks: this project side by side with its peers (see docs/benchmarks.md)."""
