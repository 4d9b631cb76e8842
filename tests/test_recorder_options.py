"""The recorder's options as a user sets them: mitmproxy checks an option's choices only in its
own option editor, so the recorder checks `wsinspect_relay` itself, wherever it is set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

from tests.conftest import mitmdump
from wsinspect.recorder import Recorder
from wsinspect.store import SessionStore

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CLEAR_LINE = "wsinspect_relay must be raw or mitmproxy, not 'carrier'"


def test_wsinspect_refuses_an_unknown_relay_in_one_line(confdir):
    result = subprocess.run(
        [str(BIN / "wsinspect"), "--headless", "--listen-port", "0", "--confdir", str(confdir),
         "--set", "wsinspect_relay=carrier"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"wsinspect: {CLEAR_LINE}"]
    assert "listening" not in result.stderr + result.stdout


def test_standalone_addon_refuses_an_unknown_relay(tmp_path, confdir):
    """mitmdump frames a script's configuration error in its own traceback; the error names
    the option and the choices, and mitmdump exits without serving."""
    capture = tmp_path / "never.db"
    result = subprocess.run(
        [*mitmdump(confdir), "-s", "addons/wsinspect.py", "--listen-host", "127.0.0.1",
         "--listen-port", "0", "--set", f"wsinspect_capture={capture}",
         "--set", "wsinspect_relay=carrier"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert f"OptionsError: {CLEAR_LINE}" in output
    assert "Error logged during startup, exiting" in output


def test_setting_an_unknown_relay_at_run_time_is_rolled_back():
    """`:set` in mitmproxy's console (options.update): refused, and the relay in use stays."""
    store = SessionStore()
    recorder = Recorder(store)
    with taddons.context(recorder) as tctx:
        tctx.configure(recorder, wsinspect_relay="mitmproxy")
        with pytest.raises(exceptions.OptionsError, match=CLEAR_LINE):
            tctx.options.update(wsinspect_relay="carrier")
        assert tctx.options.wsinspect_relay == "mitmproxy"
        assert recorder.relay_path() == "mitmproxy"
        recorder.done()
    store.close()
