"""MkDocs hooks: the benchmark studies' generated pages join the site and its Results section.

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
    results = section(config["nav"], "Results")
    results.insert(0, {"Benchmarks and results": "benchmarks/README.md"})
    results.insert(1, {"Studies": [{title: page} for title, page in study_pages()]})
    return config


def on_files(files: Files, config: Any) -> Files:
    bench = ROOT / "benchmarks"
    paths = [bench / "README.md"] + [ROOT / page for _, page in study_pages()]
    paths += sorted(bench.glob("*/results/*.png")) + sorted(bench.glob("*/results/*.md"))  # plots, per-class tables
    for path in paths:
        files.append(File(str(path.relative_to(ROOT)), str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files
