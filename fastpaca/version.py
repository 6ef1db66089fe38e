"""The package version, read from the installed metadata when available."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("fastpaca")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0"
