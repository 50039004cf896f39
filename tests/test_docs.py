"""The documentation against the code: every ``segnas`` command in the README, the docs and the
benchmark pages parses (its command path exists and every flag it uses is one of that command's
options), the README stays short and starts with its two commands, the generated pages are up to
date with the result files, no page points at a machine path, every method page lists every
setting of its method, the settings page explains every shared setting, and the study manifest
matches the files."""

from __future__ import annotations

import re
import sys
from functools import lru_cache
from pathlib import Path

import pytest
import typer.main
from pydantic import BaseModel

from segnas.cli.main import app
from segnas.search.base import get_strategy

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "benchmarks").glob("**/README.md"))]
#: Method pages this test holds to listing every setting of the method's section.
METHOD_PAGES = ("fasterseg", "ssr", "gas", "saswot", "random", "supernet", "rl")
#: Sections of a method's settings that its page describes by a link to another method's page.
DESCRIBED_ELSEWHERE = {"rl": ("evaluator",)}
PLACEHOLDER = re.compile(r"^[A-Z][A-Z_]+$")  # METHOD, NAME, RUN: stands for the user's value


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```[^\n]*\n(.*?)^```", text, re.S | re.M)


def commands_in(text: str) -> list[str]:
    """Every ``segnas`` command of the page: in code blocks (continuation lines joined, several per
    line with ``&&``) and in inline code."""
    found = []
    for block in code_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                part = part.strip().removeprefix(".venv/bin/")
                if part.startswith("segnas "):
                    found.append(part.split(" #")[0])
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    found += [" ".join(part.split()) for c in re.findall(r"`(segnas [^`]+)`", prose)
              for part in c.split("&&") if part.strip().startswith("segnas ")]
    return found


@lru_cache(maxsize=1)
def root_command():  # typer's own click command (typer vendors click)
    return typer.main.get_command(app)


def resolve(tokens: list[str]):
    """The command a token list names, and its path; None when the path holds a placeholder."""
    cmd, path = root_command(), []
    for tok in tokens:
        if not hasattr(cmd, "commands") or tok.startswith("-"):
            break
        if PLACEHOLDER.match(tok):
            return None
        if "|" in tok:  # alternatives (`segnas search fasterseg|ssr`): each must exist
            missing = [alt for alt in tok.split("|") if alt not in cmd.commands]
            assert not missing, f"`segnas {' '.join(path)}` has no commands {missing}"
            return None
        assert tok in cmd.commands, f"`segnas {' '.join(path + [tok])}`: no such command"
        cmd, path = cmd.commands[tok], path + [tok]
    if hasattr(cmd, "commands"):  # a command group: fine as a mention, not with options
        assert len(tokens) == len(path), f"`segnas {' '.join(tokens)}`: `segnas {' '.join(path)}` needs a subcommand"
    return cmd, path


def all_commands() -> list[tuple[str, str]]:
    return [(page.relative_to(ROOT).as_posix(), c) for page in PAGES for c in commands_in(page.read_text())]


def test_pages_have_commands() -> None:
    """The extraction finds the README's commands (so the next test cannot pass on nothing)."""
    found = [c for p, c in all_commands() if p == "README.md"]
    assert any(c.startswith("segnas demo") for c in found) and any(c.startswith("segnas search") for c in found)


@pytest.mark.parametrize("page,command", all_commands())
def test_command_parses(page: str, command: str) -> None:
    tokens = command.split()[1:]
    found = resolve(tokens)
    if found is None:
        return
    cmd, path = found
    options = {opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts)} | {"--help"}
    used = [t.split("=")[0] for t in tokens[len(path):] if re.match(r"^--?[a-zA-Z]", t)]
    unknown = [f for f in used if f not in options]
    assert not unknown, f"{page}: `{command}`: `segnas {' '.join(path)}` has no option {unknown}"


def test_help_of_every_command_path() -> None:
    """``--help`` works for every command path the pages use."""
    from typer.testing import CliRunner

    paths = set()
    for _, command in all_commands():
        found = resolve(command.split()[1:])
        if found:
            paths.add(tuple(found[1]))
    runner = CliRunner()
    for path in sorted(paths):
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, f"segnas {' '.join(path)} --help: {result.output[-300:]}"


def test_readme_short_and_starts_with_the_two_commands() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    first = code_blocks(text)[0]
    assert text.index("```") < text.index("\n## "), "the commands come before the first section"
    setup_demo, setup_tests = [line for line in first.splitlines() if not line.startswith("#")]
    assert setup_demo.endswith("segnas demo") and "pip install" in setup_demo
    assert "pytest" in setup_tests and "pip install" in setup_tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert setup_tests in ci, ".ci/run must run the README's test command"


def test_generated_pages_up_to_date() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import readme_tables

    stale = [str(p.relative_to(ROOT)) for p, text in readme_tables.render_all().items()
             if not p.is_file() or p.read_text() != text]
    assert not stale, f"run `python benchmarks/readme_tables.py`: out of date: {stale}"


def test_no_machine_paths_in_pages() -> None:
    """No page points at a folder of the machines it was written on; a code example may still use
    /tmp inside a container it starts."""
    bad = []
    for p in PAGES:
        text = p.read_text()
        prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
        bad += [(p.relative_to(ROOT).as_posix(), m) for m in re.findall(r"(?<![\w.])/(?:work|home|Users)/\S*", text)]
        bad += [(p.relative_to(ROOT).as_posix(), m) for m in re.findall(r"(?<![\w.])/tmp/\S*", prose)]
    assert not bad, bad


def test_settings_page_explains_every_setting() -> None:
    """Every setting the settings page lists has a meaning (the ``#:`` comment above its field), and the
    page shows what the code accepts: a bound, a default, a recipe's value."""
    from segnas.config.compare import CompareSettings
    from segnas.config.reference import setting_docs
    from segnas.config.search import EvaluatorSettings, SearchSettings
    from segnas.config.train import DataConfig, TrainConfig

    unexplained = [r.key for model in (TrainConfig, SearchSettings, EvaluatorSettings, CompareSettings)
                   for r in setting_docs(model) if not r.meaning]
    assert not unexplained, f"settings without a #: comment above their field: {unexplained}"
    page = (ROOT / "docs" / "reference" / "config.md").read_text()
    assert "| `data.crop_size` | HxW, or null | `null` |" in page
    assert "| `optim.lr` | number > 0 | `0.05` | `0.08` |" in page  # the default and cpu-short's value
    assert "| `focus_prob` |" not in page and "| `data.focus_prob` | number in [0, 1] | `0.0` |" in page
    assert {r.key for r in setting_docs(DataConfig)} == set(DataConfig.model_fields)


def test_settings_page_examples_are_valid_settings() -> None:
    """The settings page's example files are accepted as a user's new settings."""
    import yaml

    from segnas.config.io import build_config
    from segnas.config.train import TrainConfig
    from segnas.jobs.search import make_settings

    blocks = [yaml.safe_load(b) for b in code_blocks((ROOT / "docs" / "reference" / "config.md").read_text())]
    search = next(b for b in blocks if "saswot" in b)
    assert make_settings("saswot", search, new=True).saswot.space == "mobile"
    for block in blocks:
        if "saswot" not in block:
            build_config(TrainConfig, block, "docs/reference/config.md", new=True)


def test_the_worked_example_is_the_code() -> None:
    """Every code line of adding-a-method's worked example is a line of random search's source."""
    page = (ROOT / "docs" / "adding-a-method.md").read_text()
    example = next(b for b in code_blocks(page) if "class RandomSearch" in b)
    source = {line.strip() for line in (ROOT / "segnas" / "search" / "strategies" / "random.py").read_text().splitlines()}
    stale = [line.strip() for line in example.splitlines() if line.strip() and not line.strip().startswith("#")
             and line.strip() not in source]
    assert not stale, f"docs/adding-a-method.md's example differs from random.py: {stale}"


def settings_fields(model: type[BaseModel], skip: tuple[str, ...] = ()) -> list[str]:
    """Field names of a settings section and of the settings models nested in it (but ``skip``'s)."""
    names = []
    for name, f in model.model_fields.items():
        names.append(name)
        if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel) and name not in skip:
            names += settings_fields(f.annotation)
    return names


@pytest.mark.parametrize("method", METHOD_PAGES)
def test_method_page_lists_every_setting(method: str) -> None:
    page = (ROOT / "docs" / "methods" / f"{method}.md").read_text()
    fields = settings_fields(get_strategy(method).settings_class, DESCRIBED_ELSEWHERE.get(method, ()))
    # named alone, under its section (`child.size`), after another field of it (`, .stage1_steps`), or as
    # the section of a field (`controller.agent`)
    missing = [n for n in fields if not re.search(rf"`(?:[\w.]*\.)?{n}(?:\.[\w.]+)?`", page) and f"{n} (" not in page]
    assert not missing, f"docs/methods/{method}.md does not describe {missing}"


def test_study_manifest_matches_the_files() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import readme_tables

    studies = readme_tables.load_manifest()
    claimed = set()
    for s in studies.values():
        own = [x for x in s.scripts if not x.startswith("../")]
        assert all((s.folder / x).is_file() for x in own), f"{s.key}: missing script among {own}"
        assert s.current_ids is None or set(s.current_ids) <= set(s.results()), f"{s.key}: unknown current ids"
        claimed |= {p.resolve() for p in s.paths(s.result_globs)}
    for results in (ROOT / "benchmarks").glob("*/results"):
        for f in results.iterdir():
            if f.suffix in (".json", ".yaml") and not f.stem.endswith("proxy"):
                assert f.resolve() in claimed, f"{f.relative_to(ROOT)} belongs to no study in benchmarks/studies.yaml"


def test_saswot_winners_table_compares_in_one_session_only() -> None:
    """The winners table uses the shared timing session when every winner has it, else each
    search's own timing; results without final trainings are left out."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import readme_tables

    def result(ms: float, session_ms: float | None, date: str = "2026-12-05 00:00:00") -> dict:
        r = {"search": {"mode": "nsga2", "settings": {"inits": 1}}, "target_ms": 28.0, "winner_predicted_ms": 27.0,
             "winner_measured_ms": ms, "winner_params": 1.5e6, "groundtruth_steps": {"winner_percentile": 99.0},
             "final_training": {"steps": 800, "holdout": "0006R0", "training": [{}, {}], "val_miou_mean": 0.5,
                                "val_miou_std": 0.01, "holdout_miou_mean": 0.33, "holdout_miou_std": 0.02}}
        if session_ms is not None:
            r["winner_session"] = {"ms": session_ms, "date": date, "machine": {"cpu": "X"}, "size": [360, 480],
                                   "fast_scnn_ms": 5.0}
        return r

    shared = readme_tables.saswot_winners({"a": result(30.0, 14.0), "b": result(15.0, 7.0), "c": {"search": {}}})
    rows = [line for line in shared if line.startswith("| `")]
    assert [r.split("|")[4].strip() for r in rows] == ["14.0", "7.0"] and "one probe-gated session" in "".join(shared)
    apart = readme_tables.saswot_winners({"a": result(30.0, 14.0), "b": result(15.0, 7.0, "2026-12-06 00:00:00")})
    assert [r.split("|")[4].strip() for r in apart if r.startswith("| `")] == ["30.0", "15.0"]
    assert readme_tables.saswot_winners({"c": {"search": {}}}) == []


def test_mobile_study_judges_the_goal_against_fast_scnn() -> None:
    """The mobile page's verdict: +2 points at no more latency, or Fast-SCNN's mIoU at 1.3x its speed."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import readme_tables

    def run(miou: float, ms: float) -> dict:
        return {"candidates_scored": 500, "search_cpu_minutes": 55.0, "search_wall_minutes": 30.0, "predicted_ms": ms,
                "measured_ms": ms, "params": 1.0e6, "gflops": 1.0, "arch": {}, "training": [{}, {}],
                "val_miou_mean": miou, "val_miou_std": 0.004}

    def verdicts(searches: dict) -> str:
        r = {"target_ms": 4.5, "latency": "onnxruntime", "final_training": {"steps": 1234, "batch_size": 8,
             "precision": "fp32", "seeds": [0, 1]}, "fast_scnn": run(0.60, 4.0), "searches": searches,
             "settings": {"proxy": "nwot", "images": 8, "score_size": "180x240", "candidates": 1000,
                          "time_limit_min": 30.0, "workers": 2}}
        return readme_tables.mobile_camvid(r, readme_tables.load_manifest())[-1]

    line = verdicts({"better": run(0.625, 4.0), "faster": run(0.60, 3.0), "close": run(0.615, 3.2),
                     "slower": run(0.63, 4.4)})
    assert "better: +2.5 points at 1.00x Fast-SCNN's speed (met)" in line
    assert "faster: +0.0 points at 1.33x Fast-SCNN's speed (met)" in line
    assert "close: +1.5 points at 1.25x Fast-SCNN's speed (missed)" in line
    assert "slower: +3.0 points at 0.91x Fast-SCNN's speed (missed)" in line
    untrained = {**run(0.7, 1.0), "val_miou_mean": None}
    assert "Goal" not in verdicts({"untrained": untrained})


def test_recipe_screen_table_compares_each_variant_with_the_current_recipe() -> None:
    """The recipe ablation: variants ranked by cross-sequence mIoU, each one's change against the
    current recipe's, the rare classes' IoU; a pass below 2700 steps x 2 seeds is called a screen, a full one judges the goal."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import readme_tables

    def row(variant: str, held: float, pole: float) -> dict:
        return {"model": "fast_scnn", "variant": variant, "val_miou_mean": 0.6, "val_miou_std": 0.0,
                "holdout_miou_mean": held, "holdout_miou_std": 0.01, "holdout_per_class_iou": {"Pole": pole}}

    r = {"steps": 800, "seeds": 1, "holdout": "0006R0", "rare_classes": ["Pole", "Fence"], "batch_size": 8,
         "precision": "fp32", "devices": ["cpu"], "variants": {"current": {}, "cosine": {"optim": {"schedule": "cosine"}}},
         "rows": [row("current", 0.50, 0.01), row("cosine", 0.53, 0.05),
                  {**row("blur", 0.4, None), "holdout_per_class_iou": {"Pole": float("nan")}}]}
    lines = readme_tables.recipe_ablation(r)
    table = [x for x in lines if x.startswith("| fast_scnn")]
    assert table == ["| fast_scnn | cosine | 60.0 | 53.0 | +3.0 | 5.0 | – |",  # one seed: no spread shown
                     "| fast_scnn | current | 60.0 | 50.0 | – | 1.0 | – |",
                     "| fast_scnn | blur | 60.0 | 40.0 | -10.0 | – | – |"]
    no_base = {**r, "seeds": 2, "rows": [{**row("current", 0.5, 0.01), "holdout_miou_mean": None},
                                         row("cosine", 0.53, 0.05)]}
    assert "| fast_scnn | cosine | 60.0 ± 0.0 | 53.0 ± 1.0 | – | 5.0 | – |" in readme_tables.recipe_ablation(no_base)
    assert "this is a screening pass (800 steps, 1 seed(s))" in lines[-2]
    full = readme_tables.recipe_ablation({**r, "steps": 2700, "seeds": 2})[-2]
    assert "screening" not in full and full.endswith(": fast_scnn not met (best: cosine, +3.0).")
    met = {**r, "steps": 2700, "seeds": 2, "rows": [row("current", 0.50, 0.01), row("cosine", 0.56, 0.05)]}
    assert readme_tables.recipe_ablation(met)[-2].endswith(": fast_scnn met (best: cosine, +6.0).")
    assert "no variant to judge" in readme_tables.recipe_ablation({**met, "rows": [row("cosine", 0.56, 0.05)]})[-2]
    found = {**row("current", 0.45, 0.0), "model": "/runs/gas_on/arch.json"}  # a second network, its recipe only
    assert readme_tables.recipe_ablation({**met, "rows": met["rows"] + [found]})[-2].endswith(
        ": fast_scnn met (best: cosine, +6.0); gas_on: trained with the current recipe only (no variant to judge).")
    # a variant screened with one seed beside 2-seed rows: shown so, without a spread, and not judged
    screened = {**met, "rows": [row("current", 0.50, 0.01), row("cosine", 0.51, 0.05),
                                {**row("blur", 0.58, 0.02), "seeds": 1}]}
    lines = readme_tables.recipe_ablation(screened)
    assert "| fast_scnn | blur (1 seed) | 60.0 | 58.0 | +8.0 | 2.0 | – |" in lines
    assert lines[-2].endswith(": fast_scnn not met (best: cosine, +1.0).") and "shown, not judged" in lines[-4]
    only_screened = {**screened, "rows": [row("current", 0.50, 0.01), {**row("blur", 0.58, 0.02), "seeds": 1}]}
    assert readme_tables.recipe_ablation(only_screened)[-2].endswith(
        ": fast_scnn not yet judged (every variant so far screened with fewer than 2 seeds).")


def test_a_long_recipe_run_is_shown_beside_the_same_recipe_at_the_goals_steps() -> None:
    """A recipe result past the goal's steps with one variant is a long run: its val and cross-sequence
    mIoU, class by class, beside the mean of the same recipe's runs at the goal's steps, and the gain."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import readme_tables

    def row(val: float, held: float, seeds: int) -> dict:
        return {"model": "fast_scnn", "variant": "current", "val_miou_mean": val, "holdout_miou_mean": held,
                "holdout_per_class_iou": {"Road": held + 0.4, "Pole": held - 0.3},
                "training": [{"train_cpu_seconds": 3600.0 * 4 * (2700 / 10800 if seeds > 1 else 1)}] * seeds}

    common = {"holdout": "0006R0", "batch_size": 8, "precision": "fp32", "devices": ["cpu"]}
    long = {**common, "steps": 10800, "seeds": 1, "variants": {"current": {}}, "rows": [row(0.66, 0.43, 1)]}
    short = {**common, "steps": 2700, "seeds": 2, "variants": {"current": {}, "boundary": {}},
             "rows": [row(0.62, 0.40, 2)]}
    assert readme_tables.is_long_run(long) and not readme_tables.is_long_run(short)
    lines = readme_tables.recipe_long_run(long, short)
    assert "| 1 seed | 10800 | 4.0 | 66.0 | 43.0 | 83.0 | 13.0 |" in lines
    assert "| 2 seeds, mean | 2700 | 1.0 | 62.0 | 40.0 | 80.0 | 10.0 |" in lines
    assert any("trained 4x as long: +4.0 val mIoU, +3.0 cross-sequence mIoU against its 2700-step runs" in x
               for x in lines)
    assert not any("as long" in x for x in readme_tables.recipe_long_run(long, None))
