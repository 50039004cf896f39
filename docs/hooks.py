"""MkDocs hooks: the benchmark studies' generated pages join the site, and the pages that other
work adds (method pages, comparison, report, scaling) join the navigation once they exist.

The study pages live beside their results in ``benchmarks/<study>/README.md`` (readable on GitHub
next to their scripts and plots); this hook adds them to the site under the same
paths (with their plots and result tables), so ``benchmarks/README.md`` becomes the site's *Benchmarks and results* section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
#: Pages written elsewhere, added to a navigation section when present: (section, title, page).
OPTIONAL_PAGES = (
    ("Methods", "RL with auxiliary cells", "methods/rl.md"),
    ("Methods", "The mobile space", "methods/mobile.md"),
    ("Methods", "Weight-sharing search", "methods/supernet.md"),
    ("Results", "Comparing methods", "compare.md"),
    ("Results", "Run reports", "report.md"),
    ("Results", "Scaling out", "scaling.md"),
)


def study_pages() -> list[tuple[str, str]]:
    """(title, page) of every study with a generated page, in manifest order."""
    manifest = yaml.safe_load((ROOT / "benchmarks" / "studies.yaml").read_text())
    return [(entry["title"].replace("`", ""), f"benchmarks/{key}/README.md")
            for key, entry in manifest["studies"].items() if (ROOT / "benchmarks" / key / "README.md").is_file()]


def section(nav: list[Any], name: str) -> list[Any]:
    """The item list of the navigation section ``name`` (created at the end when missing)."""
    for item in nav:
        if isinstance(item, dict) and name in item:
            return item[name]
    nav.append({name: []})
    return nav[-1][name]


def on_config(config: Any) -> Any:
    nav = config["nav"]
    listed = {str(v) for item in nav for v in _pages(item)}
    for sec, title, page in OPTIONAL_PAGES:
        if (DOCS / page).is_file() and page not in listed:
            section(nav, sec).append({title: page})
    results = section(nav, "Results")
    results.insert(0, {"Benchmarks and results": "benchmarks/README.md"})
    results.insert(1, {"Studies": [{title: page} for title, page in study_pages()]})
    return config


def _pages(item: Any) -> list[str]:
    if isinstance(item, str):
        return [item]
    if isinstance(item, dict):
        return [p for v in item.values() for p in _pages(v)]
    if isinstance(item, list):
        return [p for v in item for p in _pages(v)]
    return []


def on_files(files: Files, config: Any) -> Files:
    bench = ROOT / "benchmarks"
    paths = [bench / "README.md"] + [ROOT / page for _, page in study_pages()]
    paths += sorted(bench.glob("*/results/*.png")) + sorted(bench.glob("*/results/*.md"))  # plots, per-class tables
    for path in paths:
        files.append(File(str(path.relative_to(ROOT)), str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files
