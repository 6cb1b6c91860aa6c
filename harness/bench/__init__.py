"""Benchmarks that print ratios measured in one process (never timed tests)."""

from harness.bench.ratios import BenchResult, overhead, pruning, tracking
from harness.bench.sequential import sequential
from harness.bench.speed import speed
from harness.bench.workers import workers

__all__ = ["BenchResult", "overhead", "pruning", "sequential", "speed", "tracking", "workers"]
