"""The timeline page in a real headless browser (Debian's ``chromium``): it renders, lanes exist.

Skipped when chromium is not installed; CI installs it (``apt-get install -y chromium``).
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

import tidal
import tidal.trace
from tidal import demo

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)"
)

WIDTH, HEIGHT = 900, 320


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            *args,
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )


def _png_rows(data: bytes) -> list[bytes]:
    """Decode an 8-bit RGB/RGBA, non-interlaced PNG into raw pixel rows (filters undone)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - bpp] if x >= bpp else 0
            up = previous[x]
            corner = previous[x - bpp] if x >= bpp else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
                line[x] = (line[x] + pred) & 0xFF
        rows.append(
            bytes(line if bpp == 3 else b"".join(line[i : i + 3] for i in range(0, stride, 4)))
        )
        previous = line
    return rows


def test_timeline_page_renders_lanes_in_chromium(tmp_path: Path) -> None:
    example = next(e for e in demo.EXAMPLES if e.name == "concurrent")
    with tidal.trace.record() as session:
        demo.run_example(example, tidal.new_event_loop, 0.05)
    page = tmp_path / "timeline.html"
    session.save(page)

    dom = _chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr.decode(errors="replace")[-2000:]
    html = dom.stdout.decode()
    lanes = re.findall(r'<div class="lane lane-task" data-lane="\d+">', html)
    assert len(lanes) == 3  # the cell's task and the two say_after tasks
    assert len(re.findall(r'class="seg s-waiting"', html)) >= 2
    assert 'id="tip"' in html

    shot = tmp_path / "timeline.png"
    result = _chromium(
        tmp_path, f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}", page.as_uri()
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    rows = _png_rows(shot.read_bytes())
    assert len(rows) == HEIGHT and len(rows[0]) == WIDTH * 3
    colours = {row[x : x + 3] for row in rows[::4] for x in range(0, len(row), 12)}
    assert len(colours) > 10, "the screenshot is blank"
    # The waiting colour (#8fb8e8) of the say_after lanes is really painted.
    assert any(
        abs(c[0] - 0x8F) < 8 and abs(c[1] - 0xB8) < 8 and abs(c[2] - 0xE8) < 8 for c in colours
    )
