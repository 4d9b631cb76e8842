"""wsinspect's errors share one base, which the command line reports as one line."""

from __future__ import annotations

import pytest

from wsinspect import cli, errors


def test_every_error_a_command_reports_is_a_wsinspect_error():
    from wsinspect.demo import DemoError
    from wsinspect.engine import EngineError
    from wsinspect.gateway import GatewayError
    from wsinspect.hello import StepFailed
    from wsinspect.preflight import HostError
    from wsinspect.replay import ReplayError
    from wsinspect.resend import ResendError, SessionClosedError
    from wsinspect.store import CaptureError

    for error in (CaptureError, DemoError, EngineError, GatewayError, HostError, ReplayError,
                  ResendError, SessionClosedError, StepFailed):
        assert issubclass(error, errors.WsinspectError), error
        assert getattr(errors, error.__name__) is error  # defined once, in wsinspect.errors


def test_a_capture_error_is_one_line_cut_short():
    error = errors.CaptureError("cap.db:\n  not a\tdatabase " + "x" * 1000)
    assert str(error).startswith("cap.db: not a database x")
    assert len(str(error)) == errors.CaptureError.MAX_CHARS and str(error).endswith("…")


def test_the_command_line_reports_an_error_a_command_left_as_its_line(monkeypatch, capsys):
    def failing(argv):
        raise errors.ReplayError("the server\nwent away")

    monkeypatch.setattr(cli, "dispatch", failing)
    assert cli.main(["replay", "x.db", "1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "wsinspect: the server" in err and "went away" in err
    with pytest.raises(ValueError):  # anything else is a bug, and shows as one
        monkeypatch.setattr(cli, "dispatch", lambda argv: int("x"))
        cli.main([])
