"""The timeline as a self-contained HTML page: one lane per task, coloured by state.

Owns: ``render_html`` and the page's markup, styles and the few lines of script that show a
tooltip (the await chain of a waiting segment, the span of a step, a task's creator).
Not here: recording, segments and the JSON export (timeline.py).

The page is static markup (absolutely positioned ``div`` segments, widths in percent of the
recording), so it needs no network, no build step and no script to draw; the script only adds
the tooltip. Lanes carry ``class="lane lane-<kind>"`` and ``data-lane``; segments carry
``class="seg s-<state>"`` and ``data-tip`` (tests read the DOM through these names).

Invariant: a lane draws at most ``MAX_SEGMENTS_PER_LANE`` segments (neighbours of the same
state merge, at a resolution that doubles until they fit), so a long recording stays a page a
browser opens quickly.
"""

from __future__ import annotations

import html
import itertools
from dataclasses import replace
from typing import TYPE_CHECKING, Final

from .tree import short_path

if TYPE_CHECKING:
    from .timeline import Recording, Segment

MAX_SEGMENTS_PER_LANE: Final = 4000  # beyond this, adjacent segments merge harder
MAX_LANES_DRAWN: Final = 400

_COLOURS: Final = {
    "running": ("#1b7f3b", "step running"),
    "waiting": ("#8fb8e8", "waiting (future, timer, I/O)"),
    "waiting-task": ("#c3a6e0", "waiting for another task"),
    "scheduled": ("#f2d16b", "scheduled, not yet run"),
    "finished": ("#1b7f3b", "finished"),
    "cancelled": ("#e08a1e", "cancelled"),
    "failed": ("#d32f2f", "failed"),
    "io": ("#d9d9d9", "loop idle in the poller"),
    "callback": ("#f0a830", "callback"),
    "timer": ("#b07cc6", "timer callback"),
    "job": ("#2a9d8f", "executor job"),
    "job-failed": ("#d32f2f", "executor job failed"),
}


def _merge(segments: list[Segment], resolution: float) -> list[Segment]:
    """Merge neighbours of the same state closer than ``resolution`` seconds (for drawing)."""
    merged: list[Segment] = []
    for seg in segments:
        if merged:
            last = merged[-1]
            if (
                last.state == seg.state
                and seg.start - last.end <= resolution
                and seg.end > seg.start
            ):
                tip = last.tip if last.tip == seg.tip or not seg.tip else f"{last.tip}\n…"
                merged[-1] = replace(last, end=max(last.end, seg.end), tip=tip)
                continue
        merged.append(seg)
    return merged


def render_html(rec: Recording, title: str) -> str:
    """The whole page for ``rec``, titled ``title``."""
    total = max(rec.duration, 1e-6)
    by_lane: dict[int, list[Segment]] = {}
    for seg in rec.segments():
        by_lane.setdefault(seg.lane, []).append(seg)
    lanes = [lane for lane in rec.lanes if by_lane.get(lane.id)]
    hidden = max(0, len(lanes) - MAX_LANES_DRAWN)
    lanes = lanes[:MAX_LANES_DRAWN]
    rows = []
    for lane in lanes:
        segs = by_lane[lane.id]
        resolution = total / 2000
        while True:
            segs = _merge(segs, resolution)
            if len(segs) <= MAX_SEGMENTS_PER_LANE:
                break
            resolution *= 2
        cells = []
        for seg in segs:
            left = seg.start / total * 100
            width = max(0.0, (seg.end - seg.start) / total * 100)
            span = f"{_fmt_s(seg.start)} to {_fmt_s(seg.end)} ({_fmt_s(seg.end - seg.start)})"
            tip = f"{lane.name}: {_COLOURS[seg.state][1]}\n{span}"
            if seg.tip:
                tip += "\n" + seg.tip
            marker = " mark" if seg.end <= seg.start else ""
            cells.append(
                f'<div class="seg s-{seg.state}{marker}" style="left:{left:.4f}%;'
                f'width:{width:.4f}%" data-tip="{html.escape(tip)}"></div>'
            )
        label = html.escape(lane.name)
        detail = html.escape(lane.detail if lane.kind == "task" else lane.kind)
        hover = lane.name
        if lane.kind == "task":
            hover += f"\ncoroutine: {lane.detail}"
            if lane.created_at:
                hover += f"\ncreated at {short_path(lane.created_at)}"
            if lane.parent >= 0:
                hover += f"\ncreated by {rec.lanes[lane.parent].name}"
        rows.append(
            f'<div class="lane lane-{lane.kind}" data-lane="{lane.id}">'
            f'<div class="label" data-tip="{html.escape(hover)}"><b>{label}</b>'
            f"<span>{detail}</span></div>"
            f'<div class="track">{"".join(cells)}</div></div>'
        )
    ticks = []
    step = _tick_step(total)
    for i in itertools.count():
        at = i * step
        if at > total * 1.0001:
            break
        ticks.append(f'<div class="tick" style="left:{at / total * 100:.4f}%">{_fmt_s(at)}</div>')
    legend = "".join(
        f'<span class="key"><i class="s-{state}"></i>{html.escape(text)}</span>'
        for state, (_, text) in _COLOURS.items()
        if state not in {"finished", "job-failed"}
    )
    css_states = "".join(
        f".s-{state} {{ background: {colour}; }}\n" for state, (colour, _) in _COLOURS.items()
    )
    summary = (
        f"{len(rec.task_lanes())} task lanes, {len(rec.events)} events, "
        f"{_fmt_s(rec.duration)} recorded"
        + (f", {rec.dropped} oldest events dropped (ring buffer full)" if rec.dropped else "")
        + (f", {hidden} lanes not drawn" if hidden else "")
    )
    return _PAGE.format(
        style=_STYLE,
        script=_SCRIPT,
        title=html.escape(title),
        summary=html.escape(summary),
        css_states=css_states,
        legend=legend,
        ticks="".join(ticks),
        rows="\n".join(rows),
    )


def _tick_step(total: float) -> float:
    raw = total / 8
    for step in itertools.chain.from_iterable((m * 10**e for m in (1, 2, 5)) for e in range(-6, 6)):
        if step >= raw:
            return float(step)
    return total


def _fmt_s(seconds: float) -> str:
    if seconds == 0:
        return "0"
    if abs(seconds) >= 1:
        return f"{seconds:.3g}s" if seconds < 100 else f"{seconds:.0f}s"
    if abs(seconds) >= 1e-3:
        return f"{seconds * 1e3:.3g}ms"
    return f"{seconds * 1e6:.3g}µs"


_STYLE: Final = """
body { font: 13px/1.35 system-ui, sans-serif; margin: 16px; color: #222; background: #fff; }
h1 { font-size: 17px; margin: 0 0 4px; }
.summary { color: #555; margin-bottom: 10px; }
.legend { margin: 0 0 12px; display: flex; flex-wrap: wrap; gap: 4px 14px; }
.key i {
  display: inline-block; width: 14px; height: 10px; margin-right: 5px;
  vertical-align: middle; border-radius: 2px;
}
.chart { border-top: 1px solid #ccc; padding-right: 40px; }
.axis, .lane { display: flex; align-items: stretch; }
.label {
  flex: 0 0 230px; padding: 3px 8px 3px 0; overflow: hidden; white-space: nowrap;
  text-overflow: ellipsis; border-bottom: 1px solid #eee;
}
.axis .label { border: none; }
.label span { color: #777; margin-left: 6px; font-size: 12px; }
.track {
  position: relative; flex: 1; height: 22px; border-bottom: 1px solid #eee;
  background: repeating-linear-gradient(90deg, #f4f4f4 0, #f4f4f4 1px,
                                        transparent 1px, transparent 12.5%);
}
.axis .track { height: 20px; background: none; border-bottom: 1px solid #ccc; }
.lane-loop .track, .lane-thread .track { background-color: #fbfbfb; }
.seg { position: absolute; top: 3px; bottom: 3px; min-width: 1px; border-radius: 2px; }
.seg:not(.mark) { box-shadow: inset -2px 0 0 rgba(255, 255, 255, .9); }
.seg.mark { width: 4px !important; margin-left: -2px; top: 1px; bottom: 1px; }
.seg:hover { outline: 2px solid #000; z-index: 2; }
.tick {
  position: absolute; top: 3px; height: 14px; padding-left: 3px;
  font-size: 11px; color: #666; border-left: 1px solid #bbb;
}
#tip {
  position: fixed; display: none; pointer-events: none; z-index: 10; max-width: 70vw;
  background: #222; color: #fff; padding: 6px 8px; border-radius: 4px; white-space: pre;
  font: 12px/1.4 ui-monospace, Menlo, Consolas, monospace;
}
"""

# Shows the data-tip of whatever the pointer is over, kept inside the window.
_SCRIPT: Final = """
(function () {
  var tip = document.getElementById("tip");
  document.addEventListener("mousemove", function (e) {
    var t = e.target.closest("[data-tip]");
    if (!t) { tip.style.display = "none"; return; }
    tip.textContent = t.getAttribute("data-tip");
    tip.style.display = "block";
    var r = tip.getBoundingClientRect(), x = e.clientX + 14, y = e.clientY + 14;
    if (x + r.width > innerWidth) x = Math.max(0, e.clientX - r.width - 14);
    if (y + r.height > innerHeight) y = Math.max(0, e.clientY - r.height - 14);
    tip.style.left = x + "px";
    tip.style.top = y + "px";
  });
})();
"""

_PAGE: Final = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{style}{css_states}</style></head><body>
<h1>{title}</h1>
<div class="summary">{summary}</div>
<div class="legend">{legend}</div>
<div class="chart">
<div class="axis"><div class="label"></div><div class="track">{ticks}</div></div>
{rows}
</div>
<div id="tip"></div>
<script>{script}</script>
</body></html>
"""
