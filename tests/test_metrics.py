"""The metrics a worker adds up in memory (serve.metrics.Tally) expose exactly what direct updates would."""
from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from serve.metrics import LATENCY_BUCKETS, Tally


def metrics():
    registry = CollectorRegistry()
    return registry, Counter("c_total", "c", ["route"], registry=registry), \
        Histogram("h_seconds", "h", ["route"], buckets=LATENCY_BUCKETS, registry=registry)


def test_tally_exposes_what_direct_updates_do():
    direct, counter, histogram = metrics()
    tallied, t_counter, t_histogram = metrics()
    tally = Tally(interval=3600)  # flushed here, not by its thread
    rng = random.Random(0)
    values = [rng.choice([0.0, 0.0005, 0.001, 10.0, 11.0]) if i % 7 == 0 else rng.expovariate(300)
              for i in range(2000)]  # bucket bounds exactly, beyond the last bound, and in between
    for i, value in enumerate(values):
        route = "/a" if i % 3 else "/b"
        counter.labels(route).inc()
        histogram.labels(route).observe(value)
        tally.inc(t_counter.labels(route))
        tally.observe(t_histogram.labels(route), value)
        if i == 1000:
            tally.flush()  # flushes add up
    assert generate_latest(tallied) != generate_latest(direct)  # the rest is still only in memory
    tally.flush()

    def samples(registry):
        return sorted((s.name, tuple(sorted(s.labels.items())), round(s.value, 9))
                      for family in registry.collect() for s in family.samples if not s.name.endswith("_created"))
    assert samples(tallied) == samples(direct)
