"""Resource limits for node processes started by tests."""

from __future__ import annotations

import resource
from collections.abc import Callable


def file_size_limit(max_file_bytes: int | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that stops the child growing any file past
    ``max_file_bytes`` (RLIMIT_FSIZE). A write beyond it fails with EFBIG, as
    one on a full disk fails with ENOSPC: a way to fail LevelDB's writes
    without a small filesystem. Python ignores the SIGXFSZ that comes with
    it, so the process sees the error instead of dying."""
    if max_file_bytes is None:
        return None

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return limit
