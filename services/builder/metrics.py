"""Prometheus metrics of the build service."""

from prometheus_client import Counter, Histogram

BUILDS = Counter("berth_build_builds_total", "Builds started.")
STEP_SECONDS = Histogram(
    "berth_build_step_seconds", "Time to run one Dockerfile step.", ["instruction"],
    buckets=(.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300))
CACHE_HITS = Counter("berth_build_cache_hits_total", "Steps reused from the build cache.")
CACHE_MISSES = Counter("berth_build_cache_misses_total", "Steps the build cache did not have.")
