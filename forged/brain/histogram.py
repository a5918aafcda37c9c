"""The token-length histogram `forgectl study` saves as a PNG, drawn with Pillow (no matplotlib)."""

from __future__ import annotations

import io

from forge.study_report import TokenLengths
from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 900, 460
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 30, 50, 60
_BAR = (70, 130, 180)
_AXIS = (60, 60, 60)
_MARKS = {"p50": (46, 139, 87), "p95": (218, 165, 32), "p99": (178, 34, 34)}


def render_png(lengths: TokenLengths, title: str) -> bytes:
    """A bar chart of `lengths.histogram` with the p50/p95/p99 lengths marked; PNG bytes."""
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    unit = "tokens (estimate: characters / 4)" if lengths.estimate else f"tokens ({lengths.tokenizer})"
    draw.text((_LEFT, 12), f"{title}: {lengths.measured:,} examples", fill=_AXIS, font=font)
    draw.text((_LEFT, 28), f"length in {unit}", fill=_AXIS, font=font)

    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    x0, y0 = _LEFT, HEIGHT - _BOTTOM
    draw.line([(x0, _TOP), (x0, y0), (x0 + plot_w, y0)], fill=_AXIS, width=1)
    bins = lengths.histogram or [0]
    peak = max(bins) or 1
    bar_w = plot_w / len(bins)
    for i, count in enumerate(bins):
        if count:
            top = y0 - max(1, round(count / peak * plot_h))
            draw.rectangle([x0 + i * bar_w + 1, top, x0 + (i + 1) * bar_w - 1, y0 - 1], fill=_BAR)
    draw.text((8, _TOP - 6), f"{peak:,}", fill=_AXIS, font=font)
    draw.text((8, y0 - 6), "0", fill=_AXIS, font=font)

    span = lengths.bin_width * len(bins)

    def x_at(tokens: int) -> float:
        return x0 + min(tokens, span) / span * plot_w

    for step in range(0, len(bins) + 1, max(1, len(bins) // 8)):
        value = step * lengths.bin_width
        draw.line([(x_at(value), y0), (x_at(value), y0 + 4)], fill=_AXIS)
        draw.text((x_at(value) - 8, y0 + 8), str(value), fill=_AXIS, font=font)
    if lengths.max > span:
        draw.text((x0 + plot_w - 150, y0 + 24), f"last bar: {span:,} and longer", fill=_AXIS, font=font)
    legend_x = x0 + plot_w - 240
    for i, (name, colour) in enumerate(_MARKS.items()):
        value = getattr(lengths, name)
        draw.line([(x_at(value), _TOP), (x_at(value), y0)], fill=colour, width=2)
        draw.text((legend_x + i * 80, _TOP - 14), f"{name} {value:,}", fill=colour, font=font)
    draw.text((x0, y0 + 24), f"max {lengths.max:,}", fill=_AXIS, font=font)

    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()
