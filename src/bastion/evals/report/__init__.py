"""Reports of a results document: the terminal summary, JUnit XML and a self-contained HTML page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .html import render_html
from .junit import render_junit
from .summary import render_summary


def write_reports(doc: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write results.json, junit.xml and report.html into ``out_dir`` (created); returns their paths."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    paths = {"json": d / "results.json", "junit": d / "junit.xml", "html": d / "report.html"}
    paths["json"].write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["junit"].write_text(render_junit(doc), encoding="utf-8")
    paths["html"].write_text(render_html(doc), encoding="utf-8")
    return paths


__all__ = ["render_html", "render_junit", "render_summary", "write_reports"]
