"""The timeline page in a real headless browser, driven through WebDriver.

Debian's ``chromium`` and ``chromium-driver`` with selenium (the test extra): the page draws its
lanes, zooms and pans (keys, wheel, drag, buttons), filters lanes, reaches every one of 1,200
lanes, pins tooltips (a failed task's shows its exception), links a ``to_thread`` task to its
executor thread, keeps hostile names as text, and draws the grid on the axis ticks.
Skipped, saying why, when chromium, its driver or selenium is missing; CI installs them.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import time
import zlib
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

import tidal
import tidal.trace

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    from selenium import webdriver
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement
except ImportError:  # pragma: no cover - the test extra installs it
    webdriver = None

_MISSING = (
    "chromium is not installed (apt-get install -y chromium chromium-driver)"
    if CHROMIUM is None
    else "chromedriver is not installed (apt-get install -y chromium-driver)"
    if CHROMEDRIVER is None
    else "selenium is not installed (pip install -e .[test])"
    if webdriver is None
    else None
)
pytestmark = [pytest.mark.slow, pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")]

WIDTH, HEIGHT = 1100, 520

Program = Callable[[], Coroutine[Any, Any, None]]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        f"--window-size={WIDTH},{HEIGHT}",
    ):
        options.add_argument(flag)
    assert CHROMIUM is not None and CHROMEDRIVER is not None
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def _open(browser: WebDriver, tmp_path: Path, program: Program, title: str = "t") -> WebElement:
    """Record ``program`` on a tidal loop, open the page; return the scrolling rows element."""
    with tidal.trace.record() as session:
        tidal.run(program())
    page = tmp_path / "timeline.html"
    session.save(page, title=title)
    browser.get(page.as_uri())
    viewport = browser.find_element(By.ID, "viewport")
    _settle(browser)
    return viewport


def _settle(browser: WebDriver) -> None:
    """Wait for the page's pending redraw (it draws in an animation frame)."""
    browser.execute_async_script(
        "const done = arguments[0]; requestAnimationFrame(() => requestAnimationFrame(done));"
    )


def _view(viewport: WebElement) -> tuple[float, float]:
    return float(viewport.get_attribute("data-view-start") or "nan"), float(
        viewport.get_attribute("data-view-end") or "nan"
    )


def _rows(browser: WebDriver) -> list[WebElement]:
    return browser.find_elements(By.CSS_SELECTOR, "#spacer > .lane")


def _names(browser: WebDriver) -> list[str]:
    return [row.get_attribute("data-name") or "" for row in _rows(browser)]


async def _say_twice() -> None:
    async def say_after(delay: float, what: str) -> str:
        await asyncio.sleep(delay)
        return what

    first = asyncio.create_task(say_after(0.05, "hello"), name="say-hello")
    second = asyncio.create_task(say_after(0.1, "world"), name="say-world")
    await asyncio.gather(first, second)


def _png_rows(data: bytes) -> list[bytes]:
    """Decode an 8-bit RGB/RGBA, non-interlaced PNG into raw RGB pixel rows (filters undone)."""
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


def _colours(png: bytes) -> set[bytes]:
    rows = _png_rows(png)
    return {row[x : x + 3] for row in rows[::3] for x in range(0, len(row), 9)}


def _has_colour(colours: set[bytes], rgb: int) -> bool:
    r, g, b = rgb >> 16, (rgb >> 8) & 0xFF, rgb & 0xFF
    return any(abs(c[0] - r) < 8 and abs(c[1] - g) < 8 and abs(c[2] - b) < 8 for c in colours)


def test_page_draws_task_lanes_with_their_colours(browser: WebDriver, tmp_path: Path) -> None:
    _open(browser, tmp_path, _say_twice)
    assert _names(browser)[:1] == ["loop 1"]
    task_rows = browser.find_elements(By.CSS_SELECTOR, "#spacer > .lane-task")
    # main and the two say_after tasks; shutdown_asyncgens and shutdown_default_executor are
    # folded away.
    assert len(task_rows) == 3
    assert {"say-hello", "say-world"} <= set(_names(browser))
    assert len(browser.find_elements(By.CSS_SELECTOR, ".seg.s-waiting")) >= 2
    assert browser.find_elements(By.CSS_SELECTOR, ".seg.s-waiting-task")  # main's gather
    colours = _colours(browser.get_screenshot_as_png())
    assert len(colours) > 10, "the screenshot is blank"
    assert _has_colour(colours, 0x8FB8E8)  # waiting, really painted
    assert _has_colour(colours, 0xC3A6E0)  # waiting for another task


def test_zoom_and_pan_change_the_visible_range(browser: WebDriver, tmp_path: Path) -> None:
    viewport = _open(browser, tmp_path, _say_twice)
    start, end = _view(viewport)
    assert start == 0 and end > 0.1
    before = browser.get_screenshot_as_png()

    viewport.send_keys("+")  # keyboard zoom: half the range, about the middle
    _settle(browser)
    zoomed = _view(viewport)
    assert zoomed[1] - zoomed[0] == pytest.approx((end - start) / 2, rel=1e-6)
    after = browser.get_screenshot_as_png()
    assert before != after
    assert len(_colours(before)) > 10 and len(_colours(after)) > 10

    viewport.send_keys(Keys.ARROW_RIGHT)  # keyboard pan: a fifth of the range to the right
    _settle(browser)
    panned = _view(viewport)
    assert panned[0] == pytest.approx(zoomed[0] + (zoomed[1] - zoomed[0]) / 5, rel=1e-6)

    axis = browser.find_element(By.ID, "axis")  # the wheel over the time axis zooms in
    ActionChains(browser).scroll_from_origin(ScrollOrigin.from_element(axis), 0, -300).perform()
    _settle(browser)
    wheeled = _view(viewport)
    assert wheeled[1] - wheeled[0] < (panned[1] - panned[0]) * 0.8

    # Dragging the rows to the left moves later times into view.
    ActionChains(browser).move_to_element(viewport).click_and_hold().move_by_offset(
        -200, 0
    ).release().perform()
    _settle(browser)
    dragged = _view(viewport)
    assert dragged[0] > wheeled[0]
    assert dragged[1] - dragged[0] == pytest.approx(wheeled[1] - wheeled[0], rel=1e-6)

    # Ctrl + wheel over the rows zooms in; Shift + wheel pans; a double-click halves the range.
    origin = ScrollOrigin.from_element(viewport)
    chain = ActionChains(browser).key_down(Keys.CONTROL).scroll_from_origin(origin, 0, -300)
    chain.key_up(Keys.CONTROL).perform()
    _settle(browser)
    ctrl = _view(viewport)
    assert ctrl[1] - ctrl[0] < (dragged[1] - dragged[0]) * 0.8
    chain = ActionChains(browser).key_down(Keys.SHIFT).scroll_from_origin(origin, 0, 200)
    chain.key_up(Keys.SHIFT).perform()
    _settle(browser)
    shifted = _view(viewport)
    assert shifted[0] > ctrl[0]
    assert shifted[1] - shifted[0] == pytest.approx(ctrl[1] - ctrl[0], rel=1e-6)
    # (Dispatched: on a loaded machine two WebDriver clicks may come too far apart to count.)
    browser.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "arguments[0].dispatchEvent(new MouseEvent('dblclick', {bubbles: true,"
        " clientX: r.left + r.width / 2, clientY: r.top + 10}));",
        viewport,
    )
    _settle(browser)
    doubled = _view(viewport)
    assert doubled[1] - doubled[0] == pytest.approx((shifted[1] - shifted[0]) / 2, rel=1e-6)

    browser.find_element(By.ID, "zoom-reset").click()
    _settle(browser)
    assert _view(viewport) == (start, end)
    text = browser.find_element(By.ID, "range").text
    assert text.startswith("showing 0")


def test_grid_lines_sit_on_the_axis_ticks(browser: WebDriver, tmp_path: Path) -> None:
    viewport = _open(browser, tmp_path, _say_twice)
    for _ in range(2):
        ticks = browser.find_elements(By.CSS_SELECTOR, "#ticks .tick")
        lines = browser.find_elements(By.CSS_SELECTOR, "#grid .gridline")
        assert len(ticks) >= 3 and len(ticks) == len(lines)
        for tick, line in zip(ticks, lines, strict=True):
            assert abs(tick.rect["x"] - line.rect["x"]) < 0.6
        viewport.send_keys("+++")  # and again after zooming in
        _settle(browser)
    # The axis stays in view when the rows scroll.
    axis_y = browser.find_element(By.ID, "axis").rect["y"]
    browser.execute_script("arguments[0].scrollTop = 1000", viewport)
    _settle(browser)
    assert browser.find_element(By.ID, "axis").rect["y"] == axis_y


async def _many_tasks() -> None:
    async def job(n: int) -> None:
        await asyncio.sleep(0.001 * (n % 7))

    async with asyncio.TaskGroup() as group:
        for n in range(1200):
            group.create_task(job(n), name=f"alpha-{n}" if n % 2 else f"beta-{n}")


def test_search_and_filters_hide_non_matching_lanes(browser: WebDriver, tmp_path: Path) -> None:
    async def program() -> None:
        async def fails() -> None:
            raise RuntimeError("no")

        await _many_tasks()
        with pytest.raises(RuntimeError):
            await asyncio.create_task(fails(), name="gamma-fails")

    viewport = _open(browser, tmp_path, program)
    total = int(viewport.get_attribute("data-shown") or 0)
    assert total >= 1202
    search = browser.find_element(By.ID, "search")
    search.send_keys("beta-11")
    _settle(browser)
    names = _names(browser)
    assert names and all("beta-11" in name for name in names)
    # Even numbers are beta: beta-110 to beta-118 and beta-1100 to beta-1198.
    assert int(viewport.get_attribute("data-shown") or 0) == 5 + 50
    search.send_keys(Keys.CONTROL, "a")
    search.send_keys("nothing-matches-this")
    _settle(browser)
    assert _names(browser) == []
    search.send_keys(Keys.CONTROL, "a")
    search.send_keys(Keys.DELETE)
    _settle(browser)
    assert int(viewport.get_attribute("data-shown") or 0) == total

    browser.execute_script(
        "const s = document.getElementById('state-filter'); s.value = 'failed';"
        "s.dispatchEvent(new Event('change'));"
    )
    _settle(browser)
    assert _names(browser) == ["gamma-fails"]


def test_every_one_of_1200_lanes_is_reachable(browser: WebDriver, tmp_path: Path) -> None:
    viewport = _open(browser, tmp_path, _many_tasks)
    assert "not drawn" not in browser.find_element(By.CLASS_NAME, "summary").text
    shown = int(viewport.get_attribute("data-shown") or 0)
    assert shown >= 1201
    rows = _rows(browser)
    assert len(rows) < 100  # only what is in view is in the DOM
    browser.execute_script("arguments[0].scrollTop = arguments[0].scrollHeight", viewport)
    _settle(browser)
    names = _names(browser)
    assert "alpha-1199" in names  # the last task created, the last lane
    last = _rows(browser)[-1]
    assert last.get_attribute("data-name") == "alpha-1199"
    assert last.is_displayed() and last.rect["y"] < HEIGHT
    assert last.find_elements(By.CSS_SELECTOR, ".seg.s-finished")


def test_clicking_pins_a_tooltip_and_a_failed_task_shows_its_exception(
    browser: WebDriver, tmp_path: Path
) -> None:
    async def program() -> None:
        async def parse() -> None:
            await asyncio.sleep(0.02)
            int("not a number")

        with pytest.raises(ValueError):
            await asyncio.create_task(parse(), name="parser")

    _open(browser, tmp_path, program)
    tip = browser.find_element(By.ID, "tip")
    mark = browser.find_element(By.CSS_SELECTOR, '.lane[data-name="parser"] .seg.s-failed')
    ActionChains(browser).move_to_element(mark).click().perform()
    assert "pinned" in (tip.get_attribute("class") or "")
    text = tip.text
    assert "parser: failed" in text
    assert "ValueError: invalid literal for int() with base 10: 'not a number'" in text
    assert "raised at " in text and "test_observe_browser.py:" in text
    # Pinned: moving over other segments leaves it as it is.
    other = browser.find_element(By.CSS_SELECTOR, ".lane-loop .seg")
    ActionChains(browser).move_to_element(other).perform()
    assert tip.text == text and tip.is_displayed()
    browser.find_element(By.ID, "viewport").send_keys(Keys.ESCAPE)
    assert not tip.is_displayed()


def test_to_thread_task_links_to_its_executor_lane(browser: WebDriver, tmp_path: Path) -> None:
    async def program() -> None:
        async def offload() -> None:
            await asyncio.to_thread(time.sleep, 0.02)

        await asyncio.create_task(offload(), name="offload")

    _open(browser, tmp_path, program)
    link = browser.find_element(By.CSS_SELECTOR, '.lane[data-name="offload"] .label a')
    thread_name = link.text.removeprefix("⇢ ")
    assert thread_name.startswith("asyncio")
    ActionChains(browser).move_to_element(link).click().perform()
    _settle(browser)
    flashed = browser.find_elements(By.CSS_SELECTOR, ".lane.flash")
    assert [row.get_attribute("data-name") for row in flashed] == [thread_name]
    job = flashed[0].find_element(By.CSS_SELECTOR, ".seg.s-job")
    ActionChains(browser).move_to_element(job).perform()
    tip = browser.find_element(By.ID, "tip").text
    assert "sleep" in tip and "submitted by task offload" in tip


def test_hostile_names_stay_text(browser: WebDriver, tmp_path: Path) -> None:
    hostile = "<img src=x onerror=window.__pwned=1></script><script>window.__pwned=2</script>"

    async def program() -> None:
        await asyncio.create_task(asyncio.sleep(0.001), name=hostile)

    _open(browser, tmp_path, program, title=hostile)
    assert hostile in _names(browser)
    row = next(row for row in _rows(browser) if row.get_attribute("data-name") == hostile)
    label = row.find_element(By.CSS_SELECTOR, ".label b")
    assert label.text == hostile
    ActionChains(browser).move_to_element(label).click().perform()
    assert hostile in browser.find_element(By.ID, "tip").text
    assert browser.find_element(By.TAG_NAME, "h1").text == hostile
    assert browser.execute_script("return window.__pwned") is None
    assert browser.find_elements(By.CSS_SELECTOR, "#spacer img") == []
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018


def test_loop_internal_tasks_unfold_on_request(browser: WebDriver, tmp_path: Path) -> None:
    viewport = _open(browser, tmp_path, _say_twice)
    folded = int(viewport.get_attribute("data-shown") or 0)
    assert not browser.find_elements(By.CSS_SELECTOR, ".lane.internal")
    browser.find_element(By.ID, "show-internal").click()
    _settle(browser)
    assert int(viewport.get_attribute("data-shown") or 0) == folded + 2
    details = {
        row.find_element(By.CSS_SELECTOR, ".label span").text
        for row in browser.find_elements(By.CSS_SELECTOR, ".lane.internal")
    }
    assert details == {"EventLoop.shutdown_asyncgens", "EventLoop.shutdown_default_executor"}
