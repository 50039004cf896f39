"""A self-contained HTML document: sections of headings, text, tables, preformatted text and
images embedded as base64 PNG data URIs. No external URL, stylesheet or script is referenced, so the
file opens anywhere, offline, on its own."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image

from segnas.utils import atomic_write_text

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
h3 { font-size: 1.05em; margin-bottom: 0.3em; }
nav { display: flex; flex-wrap: wrap; gap: 0.3em 1em; } .meta { color: #666; overflow-wrap: anywhere; }
.scroll { overflow-x: auto; }
.verdict { background: #eef6ee; border-left: 4px solid #3a8a3a; padding: 0.5em 0.9em; margin: 0.6em 0 1em; }
.verdict.missed { background: #fbeeee; border-left-color: #b03a3a; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f7f7f7; border: 1px solid #ddd; padding: 0.8em; overflow: auto; max-height: 32em;
      font-size: 0.85em; }
img { max-width: 100%; height: auto; display: block; margin: 0.4em 0 1em; } img.native { max-width: none; }
.note { color: #8a5a00; background: #fff7e6; border-left: 3px solid #e0a000; padding: 0.3em 0.7em; }
.swatch { display: inline-block; margin: 0 1em 0.3em 0; font-size: 0.9em; }
.swatch i { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.3em; vertical-align: -0.1em;
            border: 1px solid #999; }
details { margin: 0.3em 0 1em; } summary { cursor: pointer; color: #335; }
figure { margin: 0 0 1em; } figcaption { color: #555; font-size: 0.9em; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_png(fig: Any, dpi: int = 100) -> bytes:
    """PNG bytes of a matplotlib figure (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def rgb_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an H×W×3 uint8 image."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG")
    return buf.getvalue()


class HtmlDocument:
    """Sections appended in order, rendered as one HTML page with a table of contents."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title, self.subtitle = title, subtitle
        self.sections: list[tuple[str, str, list[str]]] = []

    def section(self, title: str, anchor: str) -> None:
        """Start a section; what is added next goes into it."""
        self.sections.append((anchor, title, []))

    @property
    def _body(self) -> list[str]:
        if not self.sections:
            raise ValueError("start a section before adding content")
        return self.sections[-1][2]

    def heading(self, text: str) -> None:
        self._body.append(f"<h3>{esc(text)}</h3>")

    def text(self, text: str) -> None:
        self._body.append(f"<p>{esc(text)}</p>")

    def verdict(self, text: str, met: bool = True) -> None:
        """The page's answer in one highlighted paragraph (``met``: green, else red)."""
        self._body.append(f'<p class="verdict{"" if met else " missed"}">{esc(text)}</p>')

    def note(self, text: str) -> None:
        """A remark about missing or partial content (why a part is not shown)."""
        self._body.append(f'<p class="note">{esc(text)}</p>')

    def pre(self, text: str, collapsed: str | bool = False) -> None:
        """Preformatted text; ``collapsed``: a summary line under which it is folded."""
        block = f"<pre>{esc(text)}</pre>"
        self._body.append(f"<details><summary>{esc(collapsed)}</summary>{block}</details>" if collapsed else block)

    def table(self, header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[bool] | None = None,
              collapsed: str | bool = False) -> None:
        """A table; cells are escaped; ``numeric[i]`` right-aligns column ``i``; ``collapsed``: a
        summary line under which the table is folded (``<details>``, no script)."""
        numeric = list(numeric) if numeric is not None else [False] * len(header)
        head = "".join(f"<th>{esc(h)}</th>" for h in header)
        body = []
        for row in rows:
            cells = "".join(f'<td class="num">{esc(c)}</td>' if numeric[i] else f"<td>{esc(c)}</td>"
                            for i, c in enumerate(row))
            body.append(f"<tr>{cells}</tr>")
        table = f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
        if collapsed:
            table = f"<details><summary>{esc(collapsed)}</summary>{table}</details>"
        self._body.append(table)

    def swatches(self, items: Sequence[tuple[str, tuple[int, int, int]]]) -> None:
        """A colour legend: a coloured square and a name per item."""
        spans = "".join(f'<span class="swatch"><i style="background:rgb{tuple(rgb)}"></i>{esc(name)}</span>'
                        for name, rgb in items)
        self._body.append(f'<p class="legend">{spans}</p>')

    def image(self, png: bytes, alt: str, caption: str = "", native: bool = False) -> None:
        """An embedded PNG (``png``: its bytes), with an optional caption; ``native``: shown at its own
        size, scrolling sideways where the page is narrower (a wide diagram whose labels would
        shrink past reading)."""
        cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
        img = f'<img src="{png_data_uri(png)}" alt="{esc(alt)}"' + (' class="native">' if native else ">")
        self._body.append(f'<figure>{f"<div class=scroll>{img}</div>" if native else img}{cap}</figure>')

    def figure(self, fig: Any, alt: str, caption: str = "", native: bool = False) -> None:
        """An embedded matplotlib figure (closed afterwards)."""
        self.image(figure_png(fig), alt, caption, native)

    def render(self) -> str:
        nav = "\n".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t, _ in self.sections)
        parts = [f'<section id="{esc(a)}"><h2>{esc(t)}</h2>{"".join(body)}</section>' for a, t, body in self.sections]
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                f"<title>{esc(self.title)}</title><style>{STYLE}</style></head><body>"
                f"<h1>{esc(self.title)}</h1><p class=\"meta\">{esc(self.subtitle)}</p><nav>{nav}</nav>"
                f"{''.join(parts)}</body></html>\n")

    def write(self, path: str | Path) -> Path:
        """Write the page atomically; returns its path."""
        atomic_write_text(path, self.render())
        return Path(path)
