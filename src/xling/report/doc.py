"""A tiny document model rendered to both Markdown and HTML (one source, two outputs)."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path


class Doc:
    """A tiny document model rendered to both Markdown and HTML (one source, two outputs)."""

    def __init__(self):
        self.blocks: list[tuple] = []

    def h(self, level, text):
        self.blocks.append(("h", level, text))

    def p(self, text):
        if text:  # an empty paragraph (a study without a description) is no blank line under a title
            self.blocks.append(("p", text))

    def ul(self, items):
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, header, rows):
        """A table; a column without a header (a mark such as † on some rows) is left out where no row has one."""
        if not rows:
            return
        keep = [i for i, name in enumerate(header) if name != "" or any(str(r[i]) for r in rows)]
        self.blocks.append(("table", [header[i] for i in keep], [[r[i] for i in keep] for r in rows]))

    def img(self, name, caption):
        if name:
            self.blocks.append(("img", name, caption))

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "ul":
                out.append("\n".join(f"- {i}" for i in b[1]))
            elif b[0] == "table":
                cells = lambda r: "| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |"
                out.append("\n".join([cells(b[1]), "|" + "---|" * len(b[1])] + [cells(r) for r in b[2]]))
            elif b[0] == "img":
                out.append(f"![{b[2]}]({b[1]})\n\n*{b[2]}*")
        return "\n\n".join(out) + "\n"

    def html(self, title: str, base: str | Path | None = None) -> str:
        """The document as one HTML page. With `base` (the directory the images are in), every image is
        embedded as a data: URL, so the page is self-contained: it can be mailed or moved alone."""
        e = html.escape
        md = lambda t: re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", re.sub(r"`(.+?)`", r"<code>\1</code>", e(t)))
        body = []
        for b in self.blocks:
            if b[0] == "h":
                body.append(f"<h{b[1]}>{md(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                body.append(f"<p>{md(b[1])}</p>")
            elif b[0] == "ul":
                body.append("<ul>" + "".join(f"<li>{md(i)}</li>" for i in b[1]) + "</ul>")
            elif b[0] == "table":
                head = "".join(f"<th>{md(str(c))}</th>" for c in b[1])
                rows = "".join("<tr>" + "".join(f"<td>{md(str(c))}</td>" for c in r) + "</tr>" for r in b[2])
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif b[0] == "img":
                src = _data_url(Path(base) / b[1]) if base is not None else b[1]
                body.append(f'<figure><img src="{e(src)}" alt="{e(b[2])}"><figcaption>{md(b[2])}</figcaption></figure>')
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
                f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


_MEDIA_TYPES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def _data_url(path: Path) -> str:
    """The image as a data: URL; its name alone when it cannot be read (the browser shows it as missing)."""
    try:
        data = path.read_bytes()
    except OSError:
        return path.name
    media = _MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{media};base64,{base64.b64encode(data).decode('ascii')}"


CSS = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.45;"
       "color:#222}table{border-collapse:collapse;margin:1rem 0;font-size:.85rem}th,td{border:1px solid #ccc;"
       "padding:.25rem .4rem;text-align:left}th{background:#f3f3f3}code{background:#f3f3f3;padding:0 .2rem}"
       "figure{margin:1rem 0}img{max-width:100%}figcaption{font-size:.85rem;color:#555}")
