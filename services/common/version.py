"""The engine's version, reported by every service and the gateway."""

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("berth")
except PackageNotFoundError:  # running from a source tree without install
    VERSION = "0.0.0+source"

API_VERSION = "1.50"
MIN_API_VERSION = "1.24"
