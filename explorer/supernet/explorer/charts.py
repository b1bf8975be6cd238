"""Small inline SVG line charts, rendered on the server (no JavaScript, no CDN).

>>> "<svg" in str(line_chart([(0, 1.0), (60, 3.0)], "tasks per minute", "tasks"))
True
"""

from __future__ import annotations

from markupsafe import Markup, escape

W, H, PAD = 320, 120, 24


def _num(v: float) -> str:
    """A chart value for people: thousands separated, few digits."""
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:,.3g}"


def line_chart(points: list[tuple[int, float]], title: str, unit: str) -> Markup:
    """An SVG line chart of ``(unix time, value)`` points, with an accessible title and summary."""
    label = escape(title)
    if not points:
        return Markup(f'<p class="muted">{label}: no data yet</p>')
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x0, x1 = min(xs), max(xs) or 1
    y1 = max(ys) or 1.0
    span = (x1 - x0) or 1

    def x(v: int) -> float:
        return PAD + (v - x0) / span * (W - 2 * PAD)

    def y(v: float) -> float:
        return H - PAD - v / y1 * (H - 2 * PAD)

    path = " ".join(f"{'M' if i == 0 else 'L'}{x(t):.1f},{y(v):.1f}" for i, (t, v) in enumerate(points))
    dots = "".join(f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="2"/>' for t, v in points[-1:])
    last = f"{_num(ys[-1])} {escape(unit)}"
    return Markup(
        f'<figure class="chart"><svg viewBox="0 0 {W} {H}" role="img" aria-label="{label}: latest {last}">'
        f"<title>{label}</title>"
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" class="axis"/>'
        f'<text x="{PAD}" y="{PAD - 8}" class="tick">max {_num(y1)}</text>'
        f'<path d="{path}" class="line"/>{dots}</svg>'
        f"<figcaption>{label} — latest {last}</figcaption></figure>"
    )
