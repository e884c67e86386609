"""Line charts as inline SVG, drawn on the server: no chart library, nothing to fetch, the
same picture with JavaScript off. Each data point is a ``<circle class="point">`` carrying
its time and value, so a test (or a person hovering) can read the numbers back."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

WIDTH, HEIGHT = 640, 220
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 78, 16, 14, 30
COLOURS = ("#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c")


def line_chart(series: dict[str, list[tuple[datetime, float]]], label: str, *,
               steps: bool = False) -> str:
    """An SVG of each named series (points sorted by time) on shared axes; a one-line
    note instead when there is no point to draw. ``steps``: the value holds until the next
    point (a cumulative sum that moves only at events), drawn as steps, not slopes."""
    points = [p for values in series.values() for p in values]
    if not points:
        return f'<p class="empty">{escape(label)}: nothing recorded yet</p>'
    t0 = min(t for t, _ in points).timestamp()
    t1 = max(t for t, _ in points).timestamp()
    v0, v1 = min(v for _, v in points), max(v for _, v in points)
    if v1 == v0:  # a flat line sits in the middle rather than dividing by zero
        v0, v1 = v0 - 1, v1 + 1
    span_t = (t1 - t0) or 1.0
    inner_w, inner_h = WIDTH - PAD_LEFT - PAD_RIGHT, HEIGHT - PAD_TOP - PAD_BOTTOM

    def xy(t: datetime, v: float) -> tuple[float, float]:
        return (PAD_LEFT + (t.timestamp() - t0) / span_t * inner_w,
                PAD_TOP + (v1 - v) / (v1 - v0) * inner_h)

    parts = [f'<svg class="chart" role="img" aria-label="{escape(label)}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" xmlns="http://www.w3.org/2000/svg">',
             f'<rect x="{PAD_LEFT}" y="{PAD_TOP}" width="{inner_w}" height="{inner_h}" '
             'class="frame"/>']
    for value, y in ((v1, PAD_TOP), (v0, PAD_TOP + inner_h)):
        parts.append(f'<text x="{PAD_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                     f'{value:,.2f}</text>')
    for moment, anchor, x in ((t0, "start", PAD_LEFT), (t1, "end", PAD_LEFT + inner_w)):
        when = datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M UTC")
        parts.append(f'<text x="{x}" y="{HEIGHT - 8}" text-anchor="{anchor}">{when}</text>')
    for i, (name, values) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        parts.append(f'<text class="legend" x="{PAD_LEFT + 8}" y="{PAD_TOP + 14 + 14 * i}" '
                     f'style="fill: {colour}">{escape(name)}</text>')
        coords = [xy(t, v) for t, v in sorted(values)]
        drawn = coords
        if steps:
            drawn = [p for (x, y), prev in zip(coords, [None, *coords[:-1]], strict=True)
                     for p in ([(x, prev[1])] if prev else []) + [(x, y)]]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in drawn)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                     f'points="{path}"><title>{escape(name)}</title></polyline>')
        for (t, v), (x, y) in zip(sorted(values), coords, strict=True):
            parts.append(f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="2.5" '
                         f'fill="{colour}" data-series="{escape(name)}" '
                         f'data-at="{t.isoformat()}" data-value="{v}">'
                         f'<title>{escape(name)} {t:%Y-%m-%d %H:%M} UTC: {v:,.2f}</title>'
                         '</circle>')
    parts.append("</svg>")
    return "".join(parts)
