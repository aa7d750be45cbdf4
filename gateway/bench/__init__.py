"""Benchmarks: the load generator and the end-to-end benchmark."""
