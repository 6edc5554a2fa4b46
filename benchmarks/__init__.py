"""Speed benchmarks: ``python -m benchmarks.throughput``."""
