"""Benchmarks for the dsrun launcher; `make bench` runs them through bench/run.py."""
