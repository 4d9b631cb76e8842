"""run_until_stopped: the one race of a command's work against its stop event."""

from __future__ import annotations

import asyncio

import pytest

from wsinspect.runtime import Stopped, run_until_stopped


async def test_the_works_result_when_it_ends_first():
    stop = asyncio.Event()

    async def work() -> str:
        await asyncio.sleep(0)
        return "done"

    assert await run_until_stopped(work(), stop) == "done"


async def test_the_works_error_when_it_fails_first():
    async def work() -> None:
        raise ValueError("broken")

    with pytest.raises(ValueError, match="broken"):
        await run_until_stopped(work(), asyncio.Event())


async def test_a_stop_cancels_the_work_and_lets_it_clean_up():
    stop = asyncio.Event()
    cleaned = asyncio.Event()

    async def work() -> None:
        try:
            stop.set()
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # cleaning up may await
            cleaned.set()

    with pytest.raises(Stopped):
        await run_until_stopped(work(), stop)
    assert cleaned.is_set()


async def test_a_stop_asks_the_work_to_end_when_it_can_be_asked():
    """The app is asked to exit (its `end`), not cancelled, and its ending is awaited."""
    stop = asyncio.Event()
    asked = asyncio.Event()
    ended = []

    async def work() -> None:
        stop.set()
        await asked.wait()
        ended.append("ended its own way")

    with pytest.raises(Stopped):
        await run_until_stopped(work(), stop, end=asked.set)
    assert ended == ["ended its own way"]


def test_quiet_loop_reports_drops_only_what_a_command_already_said(caplog):
    """A cancelled handler and a never-awaited network/TLS error are not reported again with a
    traceback; anything else still reaches asyncio's own report."""
    import ssl

    from wsinspect.runtime import quiet_loop_reports

    loop = asyncio.new_event_loop()
    try:
        quiet_loop_reports(loop)
        with caplog.at_level("ERROR", logger="asyncio"):
            loop.call_exception_handler(
                {"message": "Exception in callback", "exception": asyncio.CancelledError()})
            loop.call_exception_handler({
                "message": "Task exception was never retrieved",
                "exception": ssl.SSLCertVerificationError("self-signed certificate")})
            assert caplog.records == []
            loop.call_exception_handler({
                "message": "Task exception was never retrieved",
                "exception": ValueError("a bug of ours")})
        assert [r.getMessage() for r in caplog.records] == ["Task exception was never retrieved"]
    finally:
        loop.close()
