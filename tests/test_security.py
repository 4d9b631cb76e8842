"""Security defaults (issue 8): loopback unless asked, a warning when exposed without proxy
authentication, and nothing a peer sends in the logs."""

from __future__ import annotations

import subprocess

from websockets.asyncio.client import connect

from .test_cli import start_process, wsinspect


async def test_listens_on_loopback_by_default(proxy):
    assert [host for host, _ in proxy.engine.listen_addrs()] == ["127.0.0.1"]


async def exposure_warning(confdir, *extra: str) -> str:
    process, _ = await start_process(
        *wsinspect("--headless", "--listen-host", "0.0.0.0", "--listen-port", "0",
                   "--confdir", str(confdir), *extra),
        listening=r"recording to ()",
    )
    process.terminate()
    out, _ = await process.communicate()
    return process.early_output + out.decode()


async def test_warns_when_listening_beyond_loopback_without_auth(confdir):
    assert "without proxy authentication" in await exposure_warning(confdir)


async def test_no_warning_with_proxy_authentication(confdir):
    output = await exposure_warning(confdir, "--set", "proxyauth=user:secret")
    assert "without proxy authentication" not in output
    assert "secret" not in output


async def test_payloads_and_secrets_stay_out_of_the_log(proxy, echo_server):
    async with connect(
        f"ws://127.0.0.1:{echo_server}/?access_token=hunter2", proxy=proxy.url,
        additional_headers={"Authorization": "Bearer hunter2"},
    ) as ws:
        await ws.send("hunter2 in a message")
        await ws.recv()
        await (await ws.ping(b"hunter2 in a ping"))
    await proxy.wait_session(lambda s: s.outcome.value == "closed")
    logged = "\n".join(record.message for record in proxy.engine.logs.records)
    assert "client connect" in logged  # the log is there…
    assert "hunter2" not in logged  # …without payloads, headers or query strings


def test_help_is_plain(confdir):
    assert "usage: wsinspect" in subprocess.run(wsinspect("--help"), capture_output=True, text=True).stdout
