"""Prometheus metrics of the image service."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

IMAGES = Gauge("berth_image_images", "Images in the local store.")
LAYER_BYTES = Gauge("berth_image_layer_bytes", "Bytes of unpacked layers on disk.")
PULLED_BYTES = Counter("berth_image_pulled_bytes_total", "Blob bytes downloaded from registries.")
PULL_SECONDS = Histogram("berth_image_pull_seconds", "Duration of successful image pulls.",
                         buckets=(.1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300))
