"""Stopping background tasks, even those whose cancel a library drops.

Python 3.11's ``asyncio.wait_for`` returns its inner result when that
completes at the moment the waiting task is cancelled, and the cancel is
lost (fixed in 3.12). redis-py wraps every write of a client with a socket
timeout in it. A publisher task cancelled at that instant carried on and went
back to waiting for work, and the ``await task`` of its stop never returned:
a node's SIGTERM hung until the supervisor's kill (seen in a 3-node test with
the Redis adapter). ``cancel_and_wait`` cancels again until the task ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

__all__ = ["cancel_and_wait"]

_log = logging.getLogger(__name__)

RECANCEL_INTERVAL_S = 0.1


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any]], *, timeout_s: float = 5.0, what: str = "task"
) -> bool:
    """Cancel ``tasks`` and wait for all of them to end, cancelling the ones
    still running again every 100 ms (a cancel may be dropped, see above).
    Their results and errors are discarded. False, with a warning naming
    them, if some still run after ``timeout_s``: the caller goes on without
    them rather than hang its own shutdown."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            _log.warning(
                "%s did not stop in %.1f s: %s",
                what,
                timeout_s,
                ", ".join(sorted(task.get_name() for task in pending)),
                extra={"type": "shutdown.task_stuck"},
            )
            return False
        done, pending = await asyncio.wait(pending, timeout=min(RECANCEL_INTERVAL_S, remaining))
        for task in done:
            if not task.cancelled():
                task.exception()  # retrieved: no "never retrieved" warning at exit
    return True
