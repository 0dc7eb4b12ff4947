"""Speed and memory benchmarks (see docs/BENCHMARKS.md)."""
