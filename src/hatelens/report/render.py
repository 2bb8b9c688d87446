"""Sections -> report.md (plots as PNG files beside it) and a single-file report.html (plots inline as
base64 PNG, no script, no external resource: it opens anywhere, offline)."""

import base64
import html
from pathlib import Path

from hatelens.report.content import Callout, Folded, Plot, Section, Table

PLOTS_DIR = "plots"

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #4c72b0; padding-bottom: .3em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f0f3f8; }
td.PASS { background: #dff0d8; font-weight: bold; } td.FAIL { background: #f2dede; font-weight: bold; }
td.SKIP { background: #f5f5f5; color: #666; }
.callout { border-left: 5px solid #c44e52; background: #fbeeee; padding: .6em 1em; margin: 1em 0; }
details > summary { cursor: pointer; color: #4c72b0; margin: .5em 0; }
figure { margin: 1em 0; } figure img { max-width: 100%; } figcaption { color: #555; font-size: .9em; }
"""


def to_markdown(title: str, sections: list[Section], output_dir: Path) -> str:
    """The report as Markdown; each plot is written to output_dir/plots/<name>.png and linked."""
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        lines += _markdown_blocks(section.blocks, output_dir)
    return "\n".join(lines)


def _markdown_blocks(blocks: list, output_dir: Path) -> list[str]:
    lines = []
    for block in blocks:
        if isinstance(block, Folded):
            lines += _markdown_blocks(block.blocks, output_dir)
            continue
        if isinstance(block, Table):
            lines += _markdown_table(block)
        elif isinstance(block, Plot):
            path = output_dir / PLOTS_DIR / f"{block.name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(block.png)
            lines.append(f"![{block.caption}]({PLOTS_DIR}/{block.name}.png)")
            lines.append(f"*{block.caption}*")
        elif isinstance(block, Callout):
            lines.append(f"> **{block.text}**")
        else:
            lines.append(block)
        lines.append("")
    return lines


def _markdown_table(table: Table) -> list[str]:
    def cell(text: str) -> str:
        return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

    return ["| " + " | ".join(cell(text) for text in table.header) + " |",
            "|" + "---|" * len(table.header),
            *("| " + " | ".join(cell(text) for text in row) + " |" for row in table.rows)]


def to_html(title: str, sections: list[Section]) -> str:
    """The report as one self-contained HTML page."""
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             '<link rel="icon" href="data:,">',  # no favicon request
             f"<title>{html.escape(title)}</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
             f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        parts += _html_blocks(section.blocks)
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _html_blocks(blocks: list) -> list[str]:
    parts = []
    for block in blocks:
        if isinstance(block, Folded):
            parts += [f"<details><summary>{html.escape(block.summary)}</summary>", *_html_blocks(block.blocks),
                      "</details>"]
        elif isinstance(block, Table):
            parts.append(_html_table(block))
        elif isinstance(block, Plot):
            data = base64.b64encode(block.png).decode("ascii")
            parts.append(f'<figure><img alt="{html.escape(block.caption)}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
        elif isinstance(block, Callout):
            parts.append(f'<div class="callout"><strong>{html.escape(block.text)}</strong></div>')
        else:
            parts.append(f"<p>{_inline(block)}</p>")
    return parts


def _html_table(table: Table) -> str:
    header = "".join(f"<th>{html.escape(str(text))}</th>" for text in table.header)
    rows = []
    for row in table.rows:
        cells = "".join(f'<td class="{text}">{text}</td>' if text in ("PASS", "FAIL", "SKIP")
                        else f"<td>{html.escape(str(text))}</td>" for text in row)
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _inline(text: str) -> str:
    """Escape a paragraph, then turn Markdown **bold** and `code` into HTML."""
    escaped = html.escape(text)
    for marker, tag in (("**", "strong"), ("`", "code")):
        pieces = escaped.split(marker)
        escaped = "".join(piece if index % 2 == 0 else f"<{tag}>{piece}</{tag}>" for index, piece in enumerate(pieces))
    return escaped
