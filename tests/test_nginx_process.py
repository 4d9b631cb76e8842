"""wsinspect's nginx launcher (wsinspect.nginx), the one the demo and the tests run nginx with:
it starts on a port of its own, stops, and a config nginx refuses is one line naming why."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from wsinspect.nginx import NginxError, NginxProcess, find_nginx

pytestmark = pytest.mark.nginx

STATIC = """
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "launched\\n"; }}
    }}
"""


def get(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
    return answer


def test_nginx_starts_on_a_port_of_its_own_and_stops(tmp_path):
    nginx = NginxProcess(find_nginx(), tmp_path / "nginx", lambda port: STATIC.format(port=port))
    nginx.start()
    try:
        assert nginx.port > 0
        answer = get(nginx.port)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"launched\n")
        process = nginx.process
    finally:
        nginx.stop()
    assert process.poll() is not None and nginx.process is None
    with pytest.raises(OSError):
        get(nginx.port)


def test_a_config_nginx_refuses_is_one_line(tmp_path):
    nginx = NginxProcess(find_nginx(), tmp_path / "nginx", lambda port: "server { bogus; }")
    with pytest.raises(NginxError) as raised:
        nginx.start()
    message = str(raised.value)
    assert message.startswith("nginx did not start: ") and "\n" not in message
    assert '"bogus"' in message
    assert nginx.process is None


async def test_on_a_loop_nginx_starts_without_blocking_it(tmp_path):
    nginx = NginxProcess(find_nginx(), tmp_path / "nginx", lambda port: STATIC.format(port=port))
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticking = asyncio.ensure_future(tick())
    try:
        await nginx.start_on_loop()
        assert get(nginx.port).endswith(b"launched\n")
        assert ticks > 0  # the loop ran while nginx came up
    finally:
        ticking.cancel()
        nginx.stop()


def test_nginx_ends_with_the_thread_that_started_it(tmp_path):
    """Why the demo starts nginx from its loop's thread and never from a worker thread:
    PR_SET_PDEATHSIG follows the thread that forked, not the process."""
    nginx = NginxProcess(find_nginx(), tmp_path / "nginx", lambda port: STATIC.format(port=port))
    starter = threading.Thread(target=nginx.start)
    starter.start()
    starter.join()
    try:
        nginx.process.wait(timeout=10)  # nobody stopped it: its parent thread ended
        assert "signal 15 (SIGTERM) received" in nginx.error_log
    finally:
        nginx.stop()
