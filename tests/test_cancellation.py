"""``cancel_and_wait`` ends tasks whose cancel was dropped, and never hangs."""

from __future__ import annotations

import asyncio
import logging
import sys

import pytest

from fastpaca.cancellation import cancel_and_wait


async def _worker_behind_wait_for(work: asyncio.Future[None]) -> None:
    """Like redis-py's publisher: one write under ``wait_for``, then back to
    waiting for the next piece of work."""
    await asyncio.wait_for(work, timeout=5)
    await asyncio.Event().wait()


async def _started(task: asyncio.Task[None]) -> None:
    for _ in range(3):
        await asyncio.sleep(0)
    assert not task.done()


async def test_a_cancel_dropped_by_wait_for_is_repeated() -> None:
    loop = asyncio.get_running_loop()
    work: asyncio.Future[None] = loop.create_future()
    task = asyncio.create_task(_worker_behind_wait_for(work), name="publisher")
    await _started(task)
    # The write completes in the same loop iteration as the cancel.
    work.set_result(None)
    assert await cancel_and_wait([task], timeout_s=2)
    assert task.cancelled()


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for keeps the cancel from 3.12")
async def test_one_cancel_is_lost_to_wait_for_on_3_11() -> None:
    """Why the helper exists: the same race with a single cancel leaves the
    task running."""
    loop = asyncio.get_running_loop()
    work: asyncio.Future[None] = loop.create_future()
    task = asyncio.create_task(_worker_behind_wait_for(work))
    await _started(task)
    work.set_result(None)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=0.3)
    assert not done
    assert await cancel_and_wait([task], timeout_s=2)


async def test_gives_up_after_the_timeout_and_names_the_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stubborn = True

    async def refuses_to_stop() -> None:
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if not stubborn:
                    raise

    task = asyncio.create_task(refuses_to_stop(), name="stubborn")
    await _started(task)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with caplog.at_level(logging.WARNING, logger="fastpaca.cancellation"):
        assert not await cancel_and_wait([task], timeout_s=0.3, what="test tasks")
    assert 0.3 <= loop.time() - started < 2
    assert "test tasks did not stop in 0.3 s: stubborn" in caplog.text
    stubborn = False  # leave nothing running behind the test
    assert await cancel_and_wait([task], timeout_s=1)


async def test_errors_of_finished_tasks_are_consumed() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    failed = asyncio.create_task(fails())
    await asyncio.sleep(0)
    sleeping = asyncio.create_task(asyncio.sleep(10))
    assert await cancel_and_wait([failed, sleeping], timeout_s=1)
    assert sleeping.cancelled()
    assert isinstance(failed.exception(), RuntimeError)
