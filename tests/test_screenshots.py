"""screenshots/make_screenshots.py makes real PNGs of the app from a scripted session."""

from __future__ import annotations

import importlib.util
import io
import struct
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.text import Text

SCRIPT = Path(__file__).resolve().parent.parent / "screenshots" / "make_screenshots.py"
ALWAYS = ("sessions", "handshake", "messages")  # the screens every version of the app has
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), path
    assert data[12:16] == b"IHDR", path
    return struct.unpack(">II", data[16:24])


def test_the_script_makes_a_png_of_each_main_screen(tmp_path):
    out = tmp_path / "new"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)],
        capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr
    pngs = {p.stem: p for p in out.glob("*.png")}
    assert set(ALWAYS) <= set(pngs), sorted(pngs)
    assert not list(out.glob("*.svg"))  # only with --svg
    for name, png in pngs.items():
        width, height = png_size(png)
        # 120x36 cells: a window of roughly 1260x790 pixels, full of rendered text.
        assert width > 1000 and height > 600, (name, width, height)
        assert 20_000 < png.stat().st_size < 400_000, (name, png.stat().st_size)
        assert f"{png} " in done.stdout
    for screen in ("findings", "hops", "replay"):  # made once the app has them
        assert screen in pngs or f"note: no {screen}.png: " in done.stdout, done.stdout



def test_png_conversion_keeps_spaces_at_the_start_of_a_styled_run(tmp_path):
    """Rich writes one <text> per styled run with spaces as no-break spaces; rsvg-convert
    drops those at the start of a run ("Hop 1regular") unless the SVG preserves spaces."""
    spec = importlib.util.spec_from_file_location("make_screenshots", SCRIPT)
    make_screenshots = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_screenshots)
    console = Console(record=True, width=30, file=io.StringIO())
    console.print(Text("Hop 1") + Text("  regular", style="bold"))
    svg = tmp_path / "run.svg"
    svg.write_text(console.export_svg(title="t"))
    png = make_screenshots.to_png(svg)
    assert png_size(png)[0] > 0
    root = svg.read_text().split("<svg ", 1)[1].split(">", 1)[0]
    assert 'xml:space="preserve"' in root
