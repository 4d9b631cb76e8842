"""The formats table (wsinspect.formats.FORMATS) is the one place a format is declared: the
export command, the export dialog and `open_capture` follow it, and telling formats apart
imports no reader."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from textual.app import App
from textual.widgets import Input, RadioButton

from tests.builders import capture_file
from wsinspect import formats
from wsinspect.commands.export import export_parser
from wsinspect.ui.dialogs import ExportScreen

ROOT = Path(__file__).resolve().parent.parent


def test_the_export_command_offers_what_the_table_writes():
    parser = export_parser()
    (format_option,) = (a for a in parser._actions if "--format" in a.option_strings)
    assert tuple(format_option.choices) == formats.EXPORT_FORMATS == ("har", "flows", "jsonl")
    for fmt in formats.EXPORTS:
        for suffix in fmt.suffixes:
            assert suffix in format_option.help
            assert formats.export_format_for(f"out{suffix.upper()}") == fmt.name
    assert formats.export_format_for("out.bin") is None
    assert formats.export_format_for("out.db") is None  # read, never written


def test_every_format_sniffs_only_its_own_files(tmp_path):
    capture = capture_file(tmp_path / "cap.db")
    written = {"capture": capture.read_bytes()[: formats.SNIFF_BYTES]}
    store = formats.open_capture(capture)
    for name in formats.EXPORT_FORMATS:
        out = tmp_path / f"out.{name}"
        formats.export(store, out, name)
        written[name] = out.read_bytes()[: formats.SNIFF_BYTES]
    for fmt in formats.FORMATS:
        assert [f.name for f in formats.FORMATS if f.sniff(written[fmt.name])] == [fmt.name]


@pytest.mark.parametrize(
    "name, loaded, not_loaded",
    [
        ("capture", [], ["wsinspect.formats.har", "wsinspect.formats.flows", "mitmproxy"]),
        ("har", ["wsinspect.formats.har"], ["wsinspect.formats.flows", "mitmproxy"]),
        ("flows", ["wsinspect.formats.flows", "mitmproxy"], ["wsinspect.formats.har"]),
    ],
)
def test_open_capture_imports_only_the_reader_of_the_file_it_opens(
    tmp_path, name, loaded, not_loaded
):
    capture = capture_file(tmp_path / "cap.db")
    path = capture
    if name != "capture":
        path = tmp_path / f"cap.{name}"
        formats.export(formats.open_capture(capture), path, name)
    code = (
        "import json, sys\n"
        "from wsinspect.formats import open_capture\n"
        "store = open_capture(sys.argv[1])\n"
        "print(json.dumps([len(store.sessions()), sorted(sys.modules)]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=True,
    )  # fmt: skip
    sessions, modules = json.loads(result.stdout)
    assert sessions == 1
    for module in loaded:
        assert module in modules
    for module in not_loaded:
        assert module not in modules


def test_a_json_lines_export_is_recognised_and_refused(tmp_path):
    capture = capture_file(tmp_path / "cap.db")
    out = tmp_path / "messages.jsonl"
    formats.export(formats.open_capture(capture), out, "jsonl")
    with pytest.raises(formats.CaptureError) as raised:
        formats.open_capture(out)
    assert str(raised.value) == (
        f"{out}: a JSON lines export, which holds messages only; "
        "open the capture, HAR or flow file it was made from"
    )


def test_an_unknown_file_is_refused_naming_every_readable_format(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    with pytest.raises(formats.CaptureError) as raised:
        formats.open_capture(path)
    assert str(raised.value) == (
        f"{path}: not a format wsinspect reads "
        "(a wsinspect capture, a HAR file or a mitmproxy flow file)"
    )


class ExportDialogHost(App):
    def on_mount(self) -> None:
        self.push_screen(ExportScreen("capture-1", None))


async def choose(app: App, pilot, name: str) -> str:
    (button,) = (b for b in app.screen.query(RadioButton) if b.name == name)
    button.value = True
    await pilot.pause()
    return app.screen.query_one("#export-path", Input).value


async def test_the_export_dialog_offers_the_table_and_follows_its_suffixes():
    app = ExportDialogHost()
    async with app.run_test() as pilot:
        await pilot.pause()
        offered = [b.name for b in app.screen.query_one("#export-format").query(RadioButton)]
        assert offered == list(formats.EXPORT_FORMATS)
        path = app.screen.query_one("#export-path", Input)
        assert path.value == "capture-1.har"
        assert await choose(app, pilot, "flows") == "capture-1.flows"
        assert await choose(app, pilot, "jsonl") == "capture-1.jsonl"
        path.value = "mine.MITM"  # another suffix of the table's: still follows the choice
        assert await choose(app, pilot, "har") == "mine.har"
        path.value = "mine.txt"  # a name of the user's own: left alone
        assert await choose(app, pilot, "flows") == "mine.txt"
