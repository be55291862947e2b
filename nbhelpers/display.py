"""One display for every result the package returns (check reports, guard reports, timing
profiles, comparisons, self-check verdicts).

A result class subclasses :class:`Report` and implements ``to_frame()`` (a pandas DataFrame,
one row per item) and, optionally, ``summary()`` (one line under the table). It then prints as
plain text and shows as an HTML table in a notebook, the same way everywhere.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

__all__ = ["STATUS_COLOURS", "Report", "badge", "figure_png_base64"]

#: Colours of a status word in tables and badges (GitHub's palette).
STATUS_COLOURS = {
    "PASS": "#1a7f37",
    "ok": "#1a7f37",
    "✅": "#1a7f37",
    "FAIL": "#cf222e",
    "refused": "#cf222e",
    "❌": "#cf222e",
    "N/A": "#6e7781",
    "ERROR": "#9a6700",
    "WARN": "#9a6700",
}


def badge(status: str) -> str:
    """``status`` as a small coloured HTML label."""
    colour = STATUS_COLOURS.get(status, "#6e7781")
    return (
        f'<span style="background:{colour};color:white;padding:1px 6px;border-radius:3px;'
        f'font-weight:bold">{html.escape(status)}</span>'
    )


def figure_png_base64(figure: Any) -> str:
    """The matplotlib ``figure`` as a base64 PNG string ('' if it cannot be rendered)."""
    try:
        buf = io.BytesIO()
        figure.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    except Exception:  # noqa: BLE001 - a broken figure must not hide the result
        return ""
    return base64.b64encode(buf.getvalue()).decode("ascii")


class Report:
    """Mixin: plain text and an HTML table from ``to_frame()`` and ``summary()``.

    Subclasses may set ``status_column`` to colour that column's values with :func:`badge`.
    """

    status_column: str | None = None

    def to_frame(self):  # pragma: no cover - every subclass implements it
        """The result as a pandas DataFrame."""
        raise NotImplementedError

    def summary(self) -> str:
        """One line under the table ('' for none)."""
        return ""

    def __str__(self) -> str:
        frame = self.to_frame()
        text = frame.to_string(index=False) if len(frame) else ""
        return "\n".join(part for part in (text, self.summary()) if part)

    def _repr_html_(self) -> str:
        frame = self.to_frame().copy()
        column = self.status_column
        cells = getattr(frame, "map", None) or frame.applymap  # pandas < 2.1: applymap
        escaped = cells(lambda v: html.escape(v) if isinstance(v, str) else v)
        if column in escaped:
            escaped[column] = [badge(str(v)) for v in frame[column]]
        table = escaped.to_html(index=False, escape=False, na_rep="")
        summary = self.summary()
        return table + (f"<p>{html.escape(summary)}</p>" if summary else "")
