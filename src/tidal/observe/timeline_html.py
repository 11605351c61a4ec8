"""The timeline as a self-contained HTML page you can explore: zoom, pan, search, pin tooltips.

Owns: ``render_html`` (the page: markup, styles, the recording as JSON, and the script that
draws it) and ``page_data`` (what the script draws).
Not here: recording, segments and the JSON trace export (timeline.py).

How the page works. The recording goes into the page as one JSON document (a
``<script type="application/json">`` block, with ``<``, ``>`` and ``&`` written as JSON escapes so
no name can end the block); the script draws only what is on screen:

- rows are virtual: a spacer as tall as every lane that passes the filters, and only the rows
  in view (plus a few either side) exist in the DOM, so 10,000 lanes scroll like 10;
- each drawn row shows the segments inside the visible time range, in pixels; neighbours
  closer than a pixel merge (the tooltip counts them and says to zoom in);
- the time axis sits above the scrolling rows, so it stays in view, and the grid lines are drawn
  from the same tick positions as the axis labels, on the same pixel width.

Every string from the program (task names, coroutine names, await chains, exception messages)
reaches the page through ``textContent`` or the JSON block, never as markup; the title is
escaped as HTML. The page loads nothing from the network.

Interactions: Ctrl (or Cmd) + wheel, the wheel over the time axis, double-click, the toolbar's
buttons and the + / - / W / S keys zoom (about the pointer, or the middle); dragging, shift +
wheel, a horizontal wheel and the arrow / A / D keys pan; 0 shows the whole recording; the
search box filters lanes by task name or coroutine, the menu by how the task ended; clicking a
segment or a lane's name pins its tooltip (Esc or a click elsewhere unpins) and its links jump
to the creator, the tasks created, or the executor thread of a ``to_thread`` call.

DOM names tests rely on: ``#viewport`` (the scrolling rows; ``data-view-start`` /
``data-view-end`` give the visible range in seconds, ``data-shown`` the lanes that pass the
filters), rows ``div.lane.lane-<kind>`` with ``data-lane`` and ``data-name``, segments
``div.seg.s-<state>``, ``#ticks .tick`` and ``#grid .gridline`` (one each per tick), ``#search``,
``#state-filter``, ``#show-internal``, ``#tip`` (class ``pinned`` while pinned).

Invariant: a lane carries at most ``MAX_SEGMENTS_PER_LANE`` segments into the page (neighbours
of the same state merge, at a resolution that doubles until they fit), so a long recording
stays a page a browser opens quickly.
"""

from __future__ import annotations

import html
import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

from .tree import short_path

if TYPE_CHECKING:
    from .timeline import Recording, Segment

MAX_SEGMENTS_PER_LANE: Final = 20_000  # beyond this, adjacent segments merge in Python
_FIRST_RESOLUTION: Final = 1e-6  # fraction of the recording: the first merge resolution tried

# state -> (colour, what it means); the order is the legend's.
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
_LEGEND_SKIP: Final = frozenset({"finished", "job-failed"})  # same colours as others shown

# The state menu: value -> label. Task values match Lane.state; "other" is loop and threads.
_STATE_FILTERS: Final = (
    ("", "every lane"),
    ("failed", "failed tasks"),
    ("cancelled", "cancelled tasks"),
    ("finished", "finished tasks"),
    ("pending", "tasks still pending"),
    ("other", "loop and threads"),
)


def _fit(segments: list[Segment], total: float) -> list[Segment]:
    """At most MAX_SEGMENTS_PER_LANE segments: neighbours of one state merge, closer first."""
    resolution = total * _FIRST_RESOLUTION
    while len(segments) > MAX_SEGMENTS_PER_LANE:
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
        segments = merged
        resolution *= 2
    return segments


def page_data(rec: Recording) -> dict[str, Any]:
    """What the page's script draws: lanes with their segments, as plain JSON values.

    Segments are flat lists of ``start, end, state index, tip index`` per lane (seconds since
    the recording started); tips are shared strings (await chains repeat a lot).
    """
    total = max(rec.duration, 1e-6)
    by_lane: dict[int, list[Segment]] = {}
    for seg in rec.segments():
        by_lane.setdefault(seg.lane, []).append(seg)
    state_names = list(_COLOURS)
    state_index = {name: i for i, name in enumerate(state_names)}
    tips: list[str] = [""]
    tip_index: dict[str, int] = {"": 0}
    lanes: list[dict[str, Any]] = []
    for lane in rec.lanes:
        segments = by_lane.get(lane.id)
        if not segments:
            continue
        flat: list[float | int] = []
        for seg in _fit(segments, total):
            index = tip_index.get(seg.tip)
            if index is None:
                index = tip_index[seg.tip] = len(tips)
                tips.append(seg.tip)
            flat.extend((round(seg.start, 9), round(seg.end, 9), state_index[seg.state], index))
        lanes.append(
            {
                "id": lane.id,
                "kind": lane.kind,
                "name": lane.name,
                "detail": lane.detail if lane.kind != "loop" else "",
                "created_at": short_path(lane.created_at) if lane.created_at else "",
                "parent": lane.parent,
                "state": lane.state,
                "error": lane.error,
                "internal": lane.internal,
                "linked": lane.linked,
                "segs": flat,
            }
        )
    return {
        "total": total,
        "states": [[name, *_COLOURS[name]] for name in state_names],
        "tips": tips,
        "lanes": lanes,
    }


def _json_for_script(value: Any) -> str:
    """JSON that is safe inside ``<script>``: no ``<``, ``>`` or ``&`` appear literally."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return (
        text.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def render_html(rec: Recording, title: str) -> str:
    """The whole page for ``rec``, titled ``title``."""
    data = page_data(rec)
    internal = sum(1 for lane in data["lanes"] if lane["internal"])
    legend = "".join(
        f'<span class="key"><i class="s-{state}"></i>{html.escape(text)}</span>'
        for state, (_, text) in _COLOURS.items()
        if state not in _LEGEND_SKIP
    )
    css_states = "".join(
        f".s-{state} {{ background: {colour}; }}\n" for state, (colour, _) in _COLOURS.items()
    )
    options = "".join(
        f'<option value="{value}">{html.escape(label)}</option>' for value, label in _STATE_FILTERS
    )
    summary = (
        f"{len(rec.task_lanes())} task lanes, {len(rec.events)} events, "
        f"{_fmt_s(rec.duration)} recorded"
        + (f", {rec.dropped} oldest events dropped (ring buffer full)" if rec.dropped else "")
    )
    return _PAGE.format(
        style=_STYLE,
        script=_SCRIPT,
        title=html.escape(title),
        summary=html.escape(summary),
        css_states=css_states,
        legend=legend,
        options=options,
        internal=internal,
        data=_json_for_script(data),
    )


def _fmt_s(seconds: float) -> str:
    if seconds == 0:
        return "0"
    if abs(seconds) >= 1:
        return f"{seconds:.3g}s" if seconds < 100 else f"{seconds:.0f}s"
    if abs(seconds) >= 1e-3:
        return f"{seconds * 1e3:.3g}ms"
    return f"{seconds * 1e6:.3g}µs"


_STYLE: Final = """
html, body { height: 100%; }
body {
  font: 13px/1.35 system-ui, sans-serif; margin: 0; padding: 12px 16px 8px; box-sizing: border-box;
  color: #222; background: #fff; display: flex; flex-direction: column;
}
header { margin-bottom: 6px; }
h1 { font-size: 17px; margin: 0 8px 0 0; display: inline; }
.summary { color: #555; }
.toolbar { display: flex; flex-wrap: wrap; align-items: center; gap: 6px 10px; margin-bottom: 6px; }
.toolbar input[type=search] { width: 240px; padding: 2px 6px; }
.toolbar button { min-width: 28px; }
#range, #count { color: #555; }
.legend { margin: 0 0 6px; display: flex; flex-wrap: wrap; gap: 2px 12px; font-size: 12px; }
.key i {
  display: inline-block; width: 14px; height: 10px; margin-right: 5px;
  vertical-align: middle; border-radius: 2px;
}
#chart { flex: 0 1 auto; min-height: 100px; display: flex; flex-direction: column;
         border-top: 1px solid #ccc; }
#axis { display: flex; flex: none; height: 22px; border-bottom: 1px solid #bbb; cursor: zoom-in; }
#axis .label { flex: 0 0 240px; color: #777; font-size: 11px; padding: 4px 0 0; }
#ticks { position: relative; overflow: hidden; }
.tick {
  position: absolute; top: 4px; height: 18px; padding-left: 3px; white-space: nowrap;
  font-size: 11px; color: #555; border-left: 1px solid #999;
}
#body { position: relative; flex: 0 1 auto; min-height: 50px; }
#grid { position: absolute; top: 0; bottom: 0; left: 240px; overflow: hidden;
        pointer-events: none; }
.gridline { position: absolute; top: 0; bottom: 0; width: 0; border-left: 1px solid #ececec; }
#viewport { position: absolute; inset: 0; overflow-y: auto; overflow-x: hidden; outline: none;
            cursor: grab; }
#viewport.dragging { cursor: grabbing; }
#spacer { position: relative; }
.lane { position: absolute; left: 0; right: 0; height: 24px; display: flex; }
.lane.flash { background: #fff3b0; }
.label {
  flex: 0 0 240px; box-sizing: border-box; padding: 4px 8px 0 0; display: flex; gap: 6px;
  overflow: hidden; white-space: nowrap; border-bottom: 1px solid #eee; background: #fff;
  cursor: pointer;
}
.lane.flash .label { background: #fff3b0; }
.label b { overflow: hidden; text-overflow: ellipsis; font-weight: 600; flex: 0 1 auto; }
.label span { color: #777; font-size: 12px; overflow: hidden; text-overflow: ellipsis;
              flex: 1 1 0; }
.label .dot { flex: none; width: 8px; height: 8px; margin-top: 5px; border-radius: 50%; }
.label a { flex: none; color: #1a5fb4; font-size: 11px; text-decoration: none; }
.lane.internal .label b { color: #888; font-weight: 400; }
.track { position: relative; height: 24px; box-sizing: border-box; overflow: hidden;
         border-bottom: 1px solid #eee; }
.lane-loop .track, .lane-thread .track { background: rgba(0, 0, 0, .02); }
.seg { position: absolute; top: 4px; bottom: 4px; min-width: 1px; border-radius: 2px; }
.seg.wide { box-shadow: inset -1px 0 0 rgba(255, 255, 255, .9); }
.seg.mark { width: 4px; margin-left: -2px; top: 2px; bottom: 2px; }
.seg:hover, .seg.pinned { outline: 2px solid #000; z-index: 2; }
#tip {
  position: fixed; display: none; pointer-events: none; z-index: 10; max-width: 70vw;
  background: #222; color: #fff; padding: 6px 8px; border-radius: 4px; white-space: pre-wrap;
  font: 12px/1.4 ui-monospace, Menlo, Consolas, monospace; overflow-wrap: anywhere;
}
#tip.pinned { pointer-events: auto; user-select: text; box-shadow: 0 2px 10px rgba(0,0,0,.4); }
#tip a { color: #9cd0ff; cursor: pointer; }
#tip .close { float: right; margin-left: 10px; cursor: pointer; color: #ccc; }
#help { color: #777; margin-left: auto; }
"""

# Draws the rows in view, the axis and the grid; handles zoom, pan, search, filters, tooltips.
_SCRIPT: Final = r"""
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("timeline-data").textContent);
  const ROW = 24, LABEL = 240, PAD = 12, MIN_SPAN = 1e-7, BUFFER = 6;
  const total = data.total, tips = data.tips, states = data.states, lanes = data.lanes;
  const byId = new Map(lanes.map((lane) => [lane.id, lane]));
  const children = new Map();
  for (const lane of lanes) {
    if (lane.parent >= 0) {
      if (!children.has(lane.parent)) children.set(lane.parent, []);
      children.get(lane.parent).push(lane.id);
    }
  }
  const $ = (id) => document.getElementById(id);
  const viewport = $("viewport"), spacer = $("spacer"), axis = $("axis"), ticks = $("ticks");
  const body = $("body"), grid = $("grid"), tip = $("tip"), search = $("search");
  const stateFilter = $("state-filter"), showInternal = $("show-internal");
  const view = { start: 0, end: total };
  let shown = [], flashId = -1, pinned = null, drag = null, queued = false;

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fmt(seconds, step, ref) {
    // Seconds as text in the unit that suits ``ref`` (default: the value), with as many
    // decimals as a difference of ``step`` needs.
    const big = Math.abs(ref === undefined ? seconds : ref);
    const unit = big >= 1 ? [1, "s"] : big >= 1e-3 ? [1e3, "ms"] : [1e6, "µs"];
    const digits = Math.max(0, Math.min(9, -Math.floor(Math.log10(step * unit[0] * 1.0001))));
    return (seconds * unit[0]).toFixed(digits) + " " + unit[1];
  }
  function fmtSpan(seconds) {  // a duration: four significant digits
    if (seconds <= 0) return "0";
    const unit = seconds >= 1 ? [1, "s"] : seconds >= 1e-3 ? [1e3, "ms"] : [1e6, "µs"];
    return Number((seconds * unit[0]).toPrecision(4)) + " " + unit[1];
  }
  function fmtAt(seconds) {  // a time: as precise as a pixel at the current zoom
    return fmt(seconds, Math.max((view.end - view.start) / 1000, 1e-8));
  }

  function tickStep(span, width) {
    const raw = span / Math.max(2, Math.floor(width / 110));
    const base = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5, 10]) if (base * m >= raw) return base * m;
    return base * 10;
  }

  // -- filters ---------------------------------------------------------------------------
  function matches(lane, words, state) {
    if (lane.internal && !showInternal.checked) return false;
    if (state === "other" ? lane.kind === "task" : state && lane.state !== state) return false;
    const text = (lane.name + " " + lane.detail).toLowerCase();
    return words.every((word) => text.includes(word));
  }
  function applyFilters() {
    const words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
    shown = lanes.filter((lane) => matches(lane, words, stateFilter.value));
    spacer.style.height = shown.length * ROW + "px";
    body.style.height = Math.max(2, shown.length) * ROW + 2 + "px";  // shrinks to the window
    viewport.dataset.shown = String(shown.length);
    $("count").textContent = shown.length + " of " + lanes.length + " lanes";
    schedule();
  }

  // -- drawing ---------------------------------------------------------------------------
  function width() { return Math.max(100, viewport.clientWidth - LABEL - PAD); }
  function schedule() {
    if (!queued) { queued = true; requestAnimationFrame(() => { queued = false; render(); }); }
  }

  function render() {
    const w = width(), span = view.end - view.start, scale = w / span;
    ticks.style.width = grid.style.width = w + "px";
    ticks.replaceChildren();
    grid.replaceChildren();
    const step = tickStep(span, w);
    for (let k = Math.ceil(view.start / step - 1e-9); k * step <= view.end + step * 1e-9; k++) {
      const x = (k * step - view.start) * scale;
      if (x > w) break;
      // A label that would be cut at the right edge is left out; its line stays.
      const tick = el("div", "tick", x < w - 40 ? fmt(k * step, step, view.end) : "");
      tick.style.left = x + "px";
      ticks.appendChild(tick);
      const line = el("div", "gridline");
      line.style.left = x + "px";
      grid.appendChild(line);
    }
    const top = viewport.scrollTop, height = viewport.clientHeight;
    const first = Math.max(0, Math.floor(top / ROW) - BUFFER);
    const last = Math.min(shown.length, Math.ceil((top + height) / ROW) + BUFFER);
    const rows = document.createDocumentFragment();
    for (let i = first; i < last; i++) rows.appendChild(row(shown[i], i, w, scale));
    spacer.replaceChildren(rows);
    viewport.dataset.viewStart = String(view.start);
    viewport.dataset.viewEnd = String(view.end);
    $("range").textContent = "showing " + fmt(view.start, step / 10, view.end) + " to "
      + fmt(view.end, step / 10) + " of " + fmtSpan(total);
  }

  function row(lane, index, w, scale) {
    const node = el("div", "lane lane-" + lane.kind + (lane.internal ? " internal" : "")
      + (lane.id === flashId ? " flash" : ""));
    node.style.top = index * ROW + "px";
    node.dataset.lane = String(lane.id);
    node.dataset.name = lane.name;
    const label = el("div", "label");
    label.dataset.lane = String(lane.id);
    if (lane.state) {
      const dot = el("i", "dot s-" + (lane.state === "pending" ? "scheduled" : lane.state));
      if (lane.state === "unknown") dot.style.background = "#bbb";
      label.appendChild(dot);
    }
    label.appendChild(el("b", "", lane.name));
    label.appendChild(el("span", "", lane.kind === "task" ? lane.detail : lane.kind));
    if (lane.linked.length) {
      const other = byId.get(lane.linked[0]);
      const text = (lane.kind === "task" ? "⇢ " : "⇠ ") + (other ? other.name : "?")
        + (lane.linked.length > 1 ? " +" + (lane.linked.length - 1) : "");
      const link = el("a", "link", text);
      link.dataset.goto = String(lane.linked[0]);
      link.title = lane.kind === "task" ? "its executor jobs ran here" : "the task that submitted";
      label.appendChild(link);
    }
    node.appendChild(label);
    const track = el("div", "track");
    track.style.width = w + "px";
    drawSegments(lane, track, w, scale);
    node.appendChild(track);
    return node;
  }

  function drawSegments(lane, track, w, scale) {
    const s = lane.segs, n = s.length / 4, t0 = view.start, t1 = view.end;
    let lo = 0, hi = n;  // the first segment starting after t0, then back to any covering t0
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (s[mid * 4] <= t0) lo = mid + 1; else hi = mid;
    }
    let i = lo;
    while (i > 0 && lo - i < 64 && s[(i - 1) * 4 + 1] >= t0) i--;
    // Neighbours of one state less than a pixel apart merge; a segment under a pixel wide
    // that falls in the pixel of the one before (itself under a pixel) is counted into it.
    // Every other segment is drawn, at least a pixel wide, starting where the last one ends.
    let last = null, drawnTo = -Infinity;
    for (; i < n; i++) {
      const a = s[i * 4], b = s[i * 4 + 1], state = s[i * 4 + 2];
      if (a > t1) break;
      if (b < t0) continue;
      const mark = b <= a;
      const x0 = Math.max(-4, (a - t0) * scale), x1 = Math.min(w + 4, (b - t0) * scale);
      if (last && !mark && !last.mark && x0 - last.x1 < 1 && (last.state === state
          || (x1 - x0 < 1 && x1 <= Math.max(last.x0 + 1, last.x1)))) {
        last.x1 = Math.max(last.x1, x1);
        last.count++;
        continue;
      }
      if (last) place(last);
      last = { x0, x1, state, mark, first: i, count: 1 };
    }
    if (last) place(last);

    function place(item) {
      const seg = el("div", "seg s-" + states[item.state][0]
        + (item.mark ? " mark" : item.x1 - item.x0 >= 3 ? " wide" : ""));
      const left = item.mark ? item.x0 : Math.max(item.x0, Math.min(drawnTo, item.x1 - 1));
      seg.style.left = left + "px";
      if (!item.mark) {
        seg.style.width = Math.max(1, item.x1 - left) + "px";
        drawnTo = left + Math.max(1, item.x1 - left);
      }
      seg.dataset.lane = String(lane.id);
      seg.dataset.seg = String(item.first);
      if (item.count > 1) seg.dataset.n = String(item.count);
      if (pinned && pinned.lane === lane.id && pinned.seg === item.first) {
        seg.classList.add("pinned");
      }
      track.appendChild(seg);
    }
  }

  // -- tooltips --------------------------------------------------------------------------
  // A tooltip is a list of lines; a line is text, or [text, lane id] for a link to a lane.
  function segmentLines(lane, index, count) {
    const s = lane.segs, a = s[index * 4], b = s[index * 4 + 1];
    const state = states[s[index * 4 + 2]];
    const lines = [lane.name + ": " + state[2]];
    lines.push(b > a ? fmtAt(a) + " to " + fmtAt(b) + " (" + fmtSpan(b - a) + ")"
      : "at " + fmtAt(a));
    const text = tips[s[index * 4 + 3]];
    if (text) lines.push(...text.split("\n"));
    if (count > 1) lines.push("(and " + (count - 1) + " more segments in this pixel: zoom in)");
    return lines.concat(linkLines(lane));
  }
  function laneLines(lane) {
    const lines = [lane.name];
    if (lane.kind === "task") {
      lines.push("coroutine: " + lane.detail);
      if (lane.created_at) lines.push("created at " + lane.created_at);
      if (lane.state) lines.push("state at the end: " + lane.state);
      if (lane.error) lines.push(...lane.error.split("\n"));
      if (lane.internal) lines.push("(run by the loop for itself)");
    } else {
      lines.push(lane.kind === "loop" ? "the loop's own work" : "executor thread");
    }
    return lines.concat(linkLines(lane));
  }
  function linkLines(lane) {
    const lines = [];
    const parent = byId.get(lane.parent);
    if (parent) lines.push(["created by " + parent.name, parent.id]);
    for (const id of (children.get(lane.id) || []).slice(0, 8)) {
      lines.push(["created " + byId.get(id).name, id]);
    }
    const more = (children.get(lane.id) || []).length - 8;
    if (more > 0) lines.push("created " + more + " more tasks");
    for (const id of lane.linked.slice(0, 8)) {
      const other = byId.get(id);
      if (other) {
        lines.push([(lane.kind === "task" ? "executor jobs ran on " : "job submitted by ")
          + other.name, id]);
      }
    }
    return lines;
  }
  function linesFor(target) {
    const lane = byId.get(Number(target.dataset.lane));
    if (!lane) return null;
    if (target.classList.contains("seg")) {
      return segmentLines(lane, Number(target.dataset.seg), Number(target.dataset.n || 1));
    }
    return laneLines(lane);
  }
  function showTip(lines, x, y, pin) {
    tip.replaceChildren();
    tip.classList.toggle("pinned", pin);
    if (pin) {
      const close = el("span", "close", "\u00d7");
      close.dataset.close = "1";
      close.title = "unpin (Esc)";
      tip.appendChild(close);
    }
    lines.forEach((line, n) => {
      if (n) tip.appendChild(document.createTextNode("\n"));
      if (typeof line === "string") { tip.appendChild(document.createTextNode(line)); return; }
      if (!pin) { tip.appendChild(document.createTextNode(line[0])); return; }
      const link = el("a", "", line[0]);
      link.dataset.goto = String(line[1]);
      tip.appendChild(link);
    });
    tip.style.display = "block";
    const r = tip.getBoundingClientRect();
    let left = x + 14, top = y + 14;
    if (left + r.width > innerWidth) left = Math.max(0, x - r.width - 14);
    if (top + r.height > innerHeight) top = Math.max(0, y - r.height - 14);
    tip.style.left = left + "px";
    tip.style.top = top + "px";
  }
  function unpin() {
    pinned = null;
    tip.classList.remove("pinned");
    tip.style.display = "none";
    schedule();
  }
  function pin(target, x, y) {
    const lines = linesFor(target);
    if (!lines) { unpin(); return; }
    pinned = { lane: Number(target.dataset.lane),
               seg: target.dataset.seg === undefined ? -1 : Number(target.dataset.seg) };
    showTip(lines, x, y, true);
    schedule();
  }

  // -- zoom, pan, jump -------------------------------------------------------------------
  function setView(start, end) {
    let span = Math.min(total, Math.max(MIN_SPAN, end - start));
    start = Math.min(Math.max(0, start), total - span);
    view.start = start;
    view.end = start + span;
    schedule();
  }
  function zoom(factor, at) {  // factor < 1 zooms in, about time ``at``
    const span = view.end - view.start;
    if (at === undefined) at = view.start + span / 2;
    const next = Math.min(total, Math.max(MIN_SPAN, span * factor));
    setView(at - (at - view.start) * next / span, at - (at - view.start) * next / span + next);
  }
  function pan(fraction) {
    const span = view.end - view.start;
    setView(view.start + span * fraction, view.end + span * fraction);
  }
  function timeAt(clientX) {
    const x = clientX - viewport.getBoundingClientRect().left - LABEL;
    return view.start + Math.min(1, Math.max(0, x / width())) * (view.end - view.start);
  }
  function jump(id) {
    const lane = byId.get(id);
    if (!lane) return;
    if (!shown.includes(lane)) {
      search.value = "";
      stateFilter.value = "";
      if (lane.internal) showInternal.checked = true;
      applyFilters();
    }
    const index = shown.indexOf(lane);
    flashId = id;
    viewport.scrollTop = Math.max(0, index * ROW - viewport.clientHeight / 3);
    setTimeout(() => { if (flashId === id) { flashId = -1; schedule(); } }, 1500);
    schedule();
  }

  // -- events ----------------------------------------------------------------------------
  viewport.addEventListener("scroll", schedule);
  addEventListener("resize", schedule);
  search.addEventListener("input", () => { viewport.scrollTop = 0; applyFilters(); });
  stateFilter.addEventListener("change", () => { viewport.scrollTop = 0; applyFilters(); });
  showInternal.addEventListener("change", applyFilters);
  $("zoom-in").addEventListener("click", () => zoom(0.5));
  $("zoom-out").addEventListener("click", () => zoom(2));
  $("zoom-reset").addEventListener("click", () => setView(0, total));

  function onWheel(e, overAxis) {
    const dx = e.deltaX, dy = e.deltaY;
    if (e.ctrlKey || e.metaKey || (overAxis && !e.shiftKey && Math.abs(dy) >= Math.abs(dx))) {
      e.preventDefault();
      zoom(Math.exp(Math.max(-1, Math.min(1, dy * 0.002))), timeAt(e.clientX));
    } else if (e.shiftKey || Math.abs(dx) > Math.abs(dy)) {
      e.preventDefault();
      pan((Math.abs(dx) > Math.abs(dy) ? dx : dy) / width());
    }
  }
  viewport.addEventListener("wheel", (e) => onWheel(e, false), { passive: false });
  axis.addEventListener("wheel", (e) => onWheel(e, true), { passive: false });

  function onDown(e) {
    if (e.button !== 0 || e.target.closest("#tip")) return;
    drag = { x: e.clientX, y: e.clientY, start: view.start, end: view.end,
             top: viewport.scrollTop, moved: false, target: e.target };
    e.preventDefault();  // no text selection while dragging; keys go to the chart again
    viewport.focus({ preventScroll: true });
  }
  viewport.addEventListener("mousedown", onDown);
  axis.addEventListener("mousedown", onDown);
  addEventListener("mousemove", (e) => {
    if (drag) {
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (!drag.moved && Math.abs(dx) + Math.abs(dy) < 4) return;
      drag.moved = true;
      viewport.classList.add("dragging");
      const shift = -dx / width() * (drag.end - drag.start);
      setView(drag.start + shift, drag.end + shift);
      viewport.scrollTop = drag.top - dy;
      return;
    }
    if (pinned) return;
    const target = e.target.closest && e.target.closest(".seg, .label[data-lane]");
    const lines = target ? linesFor(target) : null;
    if (lines) showTip(lines, e.clientX, e.clientY, false); else tip.style.display = "none";
  });
  addEventListener("mouseup", (e) => {
    const was = drag;
    drag = null;
    viewport.classList.remove("dragging");
    if (!was || was.moved) return;
    const link = was.target.closest("[data-goto]");
    if (link) { jump(Number(link.dataset.goto)); return; }
    const target = was.target.closest(".seg, .label[data-lane]");
    if (target) pin(target, e.clientX, e.clientY); else unpin();
  });
  tip.addEventListener("click", (e) => {
    const link = e.target.closest("[data-goto]");
    if (link) { e.preventDefault(); jump(Number(link.dataset.goto)); }
    else if (e.target.dataset.close) unpin();
  });
  viewport.addEventListener("dblclick", (e) => zoom(e.shiftKey ? 2 : 0.5, timeAt(e.clientX)));

  addEventListener("keydown", (e) => {
    const typing = e.target === search || e.target === stateFilter;
    if (e.key === "Escape") {
      if (pinned) unpin(); else if (typing) { search.blur(); viewport.focus(); }
      return;
    }
    if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
    const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    const actions = {
      "+": () => zoom(0.5), "=": () => zoom(0.5), "w": () => zoom(0.5),
      "-": () => zoom(2), "_": () => zoom(2), "s": () => zoom(2),
      "ArrowLeft": () => pan(-0.2), "a": () => pan(-0.2),
      "ArrowRight": () => pan(0.2), "d": () => pan(0.2),
      "0": () => setView(0, total), "Home": () => setView(0, total),
      "/": () => search.focus(),
    };
    const action = actions[key];
    if (action) { e.preventDefault(); action(); }
  });

  applyFilters();
  render();
  viewport.focus({ preventScroll: true });
})();
"""

_PAGE: Final = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{style}{css_states}</style></head><body>
<header><h1>{title}</h1> <span class="summary">{summary}</span></header>
<div class="toolbar">
<input id="search" type="search" placeholder="filter lanes: task or coroutine name ( / )"
 aria-label="filter lanes by name">
<select id="state-filter" aria-label="filter lanes by state">{options}</select>
<label><input id="show-internal" type="checkbox"> loop-internal tasks ({internal})</label>
<button id="zoom-in" title="zoom in (+, W, Ctrl+wheel, double-click)">+</button>
<button id="zoom-out" title="zoom out (-, S, Shift+double-click)">&minus;</button>
<button id="zoom-reset" title="the whole recording (0)">all</button>
<span id="range"></span> <span id="count"></span>
</div>
<div class="legend">{legend}<span id="help">drag or arrows: pan &middot; Ctrl+wheel,
wheel on the axis, + and -: zoom &middot; click: pin</span></div>
<div id="chart">
<div id="axis"><div class="label">time since start</div><div id="ticks"></div></div>
<div id="body"><div id="grid"></div><div id="viewport" tabindex="0"><div id="spacer"></div>
</div></div>
</div>
<div id="tip"></div>
<script type="application/json" id="timeline-data">{data}</script>
<script>{script}</script>
</body></html>
"""
