"""Methods from outside segnas (plugins): registered from a module named in SEGNAS_PLUGINS (or an
installed entry point), run by `segnas search` and `segnas compare`; a plugin with a mistake is
refused at registration with one line naming its class, and every other command still works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from segnas.errors import SegnasError
from segnas.search.asktell import AskTellStrategy
from segnas.search.base import strategy

PLUGIN = '''
from typing import ClassVar

from pydantic import Field

from segnas.config.base import Settings
from segnas.config.search import EvaluatorSettings
from segnas.search.asktell import AskTellStrategy
from segnas.search.base import strategy
from segnas.search.evaluation import build_evaluator


class HillSettings(Settings):
    space: str = "multires"
    space_options: dict = Field(default_factory=dict)
    candidates: int = Field(4, ge=1)
    evaluator: EvaluatorSettings = Field(default_factory=EvaluatorSettings)
    top_k: int = Field(2, ge=1)


@strategy("hill")
class Hill(AskTellStrategy):
    settings_class: ClassVar[type[Settings]] = HillSettings

    def make_evaluator(self, ctx):
        return build_evaluator(ctx.section.evaluator, self.space, ctx, ctx.section.space_options)

    def ask(self):
        return self.space.sample(self.rng)
'''

#: A plugin's dataset: the synthetic scenes under another name.
DATASET_PLUGIN = '''
from segnas.data import register_dataset
from segnas.data.synthetic import SyntheticStreets


@register_dataset("tiles")
class Tiles(SyntheticStreets):
    pass
'''


def segnas(tmp_path: Path, plugin: str, *args: str) -> subprocess.CompletedProcess:
    """`segnas ARGS` in a fresh process with module ``plugin_mod`` (text ``plugin``) as a plugin."""
    (tmp_path / "plugin_mod.py").write_text(textwrap.dedent(plugin))
    env = {**os.environ, "SEGNAS_PLUGINS": "plugin_mod", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    env.pop("SEGNAS_PLUGINS_WARNED", None)
    return subprocess.run([sys.executable, "-m", "segnas", *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)


def test_a_plugins_method_runs_through_search_on_a_plugins_dataset_in_worker_processes(tmp_path):
    result = segnas(tmp_path, PLUGIN + DATASET_PLUGIN, "search", "hill", "--data", "tiles", "--size", "32x48",
                    "--backend", "eager", "--target-ms", "1000", "--workers", "2", "--executor", "process",
                    "--set", "progress=false", "--set", "final.epochs=0",
                    "--set", "latency.check_target=false", "--set", "latency.calibration_networks=0",
                    "--set", "latency.table_min_runs=1", "--set", "latency.table_min_time_s=0",
                    "--set", "hill.space_options={layers: 6, base_width: 4}", "--out-dir", str(tmp_path / "runs"))
    assert result.returncode == 0, result.stderr
    run = next((tmp_path / "runs").iterdir())
    assert json.loads((run / "search_result.json").read_text())["method"] == "hill"
    assert len((run / "candidates.jsonl").read_text().splitlines()) == 4


def test_a_dataset_is_checked_when_it_registers():
    from segnas.data import DATASETS, register_dataset
    from segnas.data.synthetic import SyntheticStreets

    with pytest.raises(SegnasError, match=r"register_dataset\('bad'\): .*NoArrays lacks load_arrays, has_split"):
        @register_dataset("bad")
        class NoArrays:
            def __len__(self):
                return 0

            def __getitem__(self, i):
                raise IndexError
    with pytest.raises(SegnasError, match=r"register_dataset: 'camvid' is already segnas.data.camvid.CamVid"):
        register_dataset("camvid")(type("Mine", (SyntheticStreets,), {}))
    with pytest.raises(SegnasError, match=r"register_dataset: 'My-Data' is not a name"):
        register_dataset("My-Data")(SyntheticStreets)
    assert "bad" not in DATASETS and "My-Data" not in DATASETS


def test_segnas_warnings_print_in_one_line_from_the_command(tmp_path):
    """The command's warnings hook is installed when it starts: a segnas warning is one line."""
    code = ("import warnings, segnas.cli.main; from segnas.errors import SegnasWarning; "
            "warnings.warn(SegnasWarning('the host was busy')); warnings.warn(UserWarning('not ours'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = result.stderr.splitlines()
    assert lines[0] == "warning: the host was busy" and any("UserWarning: not ours" in x for x in lines[1:]), lines


@pytest.mark.parametrize("change, message", [
    (("import plugin_mod_missing_dependency\n", ""), r"^warning: segnas plugin plugin_mod \(SEGNAS_PLUGINS\) "
     r"not loaded: ModuleNotFoundError: No module named 'plugin_mod_missing_dependency'$"),
    (('@strategy("hill")', '@strategy("random")'), r"^warning: segnas plugin plugin_mod \(SEGNAS_PLUGINS\) not "
     r"loaded: SegnasError: search method 'random' is registered twice: by "
     r"segnas\.search\.strategies\.random\.RandomSearch and by plugin_mod\.Hill$"),
    (("    def ask(self):", "    def ask(self, rng):"), r"plugin_mod\.Hill\): overrides AskTellStrategy\.ask\(self\) "
     r"unlike the original \(another kind, or a signature that cannot take its arguments\)$"),
    (('settings_class: ClassVar[type[Settings]] = HillSettings', 'cli_options = {"seed": ("hill.top_k", int, "")}\n'
      '    settings_class: ClassVar[type[Settings]] = HillSettings'),
     r"^warning: search method 'hill' \(plugin_mod\.Hill\): its flag --seed is an option every method shares; "
     r"name it otherwise; `segnas search hill` is left out$"),
    (('settings_class: ClassVar[type[Settings]] = HillSettings', 'cli_options = {"top-k": ("hill.top_k", int)}\n'
      '    settings_class: ClassVar[type[Settings]] = HillSettings'),
     r"plugin_mod\.Hill\): cli_options\['top-k'\]: expected a lower-case flag name and \(settings path, type, help "
     r"text\)$"),
    (("    def ask(self):", "    @staticmethod\n    def ask():"),
     r"overrides AskTellStrategy\.ask \(a method, not a static method\) unlike the original"),
    (('@strategy("hill")', '@strategy("hill")\nclass Hill0(AskTellStrategy):\n    settings_class = HillSettings\n\n'
      '    def make_evaluator(self, ctx):\n        pass\n\n    def ask(self):\n        pass\n\n\n@strategy("data")'),
     r"'data' \(plugin_mod\.Hill\): a method's name is not a zoo network's name or a shared setting's"),
])
def test_a_plugin_with_a_mistake_is_left_out_in_one_line_and_segnas_works(tmp_path, change, message):
    import re

    old, new = change
    plugin = PLUGIN.replace(old, new) if old in PLUGIN else old + PLUGIN
    result = segnas(tmp_path, plugin, "search", "--help")
    assert result.returncode == 0 and "random" in result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), result.stderr
    # a plugin that fails half-way leaves none of its methods behind ('hill' registered before 'data' failed)
    assert " hill " not in result.stdout
    result = segnas(tmp_path, plugin, "search", "hill", "--data", "synthetic")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr


class _NotAStrategy:
    pass


def test_a_methods_class_is_checked_when_it_registers():
    from segnas.config.base import Settings

    class NoDefault(Settings):
        space: str
        space_options: dict = {}
        candidates: int = 4
        top_k: int = 2

    class NoTopK(Settings):
        space: str = "multires"
        space_options: dict = {}
        candidates: int = 4

    def method(settings, abstract=False):
        namespace = {"settings_class": settings, "make_evaluator": lambda self, ctx: None}
        if not abstract:
            namespace["ask"] = lambda self: None
        return type("M", (AskTellStrategy,), namespace)

    with pytest.raises(SegnasError, match=r"'m' \(.*M\): does not define ask, which every search method has"):
        strategy("m")(method(NoTopK, abstract=True))
    with pytest.raises(SegnasError, match=r"settings_class NoDefault: space has no default"):
        strategy("m")(method(NoDefault))
    with pytest.raises(SegnasError, match=r"settings_class NoTopK: no top_k, which the ask-tell family's loop reads"):
        strategy("m")(method(NoTopK))
    with pytest.raises(SegnasError, match=r"not a zoo network's name"):
        strategy("fast_scnn")(method(NoTopK))
    with pytest.raises(SegnasError, match=r"'Hill-2' \(.*M\): a search method's name is lower-case letters"):
        strategy("Hill-2")(method(NoTopK))
    with pytest.raises(SegnasError, match=r"must subclass Strategy"):
        strategy("m")(_NotAStrategy)

    class Wide(Settings):
        space: str = "multires"
        space_options: dict = {}
        candidates: int = 4
        top_k: int = 2

    def sample_like(**methods):
        return type("S", (method(Wide),), methods)

    # the arguments a method is called with: the required by position, the others by name
    with pytest.raises(SegnasError, match=r"overrides AskTellStrategy\.choose\(self, top, ctx\)"):
        strategy("m")(sample_like(choose=lambda self, top: top))
    with pytest.raises(SegnasError, match=r"Strategy\.unused_settings \(a class method, not a method\)"):
        strategy("m")(sample_like(unused_settings=lambda self, settings: {}))
    from segnas.search.base import list_strategies

    assert "m" not in list_strategies() and "fast_scnn" not in list_strategies()


SPACE_PLUGIN = '''
from segnas.spaces.base import register_space
from segnas.spaces.encdec import EncDecSpace


@register_space("tinyspace")
class Tiny(EncDecSpace):
    pass
'''


@pytest.mark.parametrize("change, message", [
    (("", ""), None),  # (a good space: registered beside the built-in ones)
    (("class Tiny(EncDecSpace):\n    pass", "class Tiny(EncDecSpace):\n    version = None"),
     r"'tinyspace' \(plugin_mod\.Tiny\): version: expected an integer"),
    (("class Tiny(EncDecSpace):\n    pass", "class Tiny(EncDecSpace):\n    def __init__(self, width):\n"
      "        super().__init__()"), r"__init__: width has no default"),
    (('@register_space("tinyspace")', '@register_space("../x")'), r"a search space's name is lower-case letters"),
    (('@register_space("tinyspace")', '@register_space("mobile")'), r"'mobile' is registered twice: by "
     r"segnas\.spaces\.mobile\.space\.MobileSpace and by plugin_mod\.Tiny"),
])
def test_a_plugins_space_is_checked_and_a_bad_one_leaves_the_built_in_spaces(tmp_path, change, message):
    """A space that fails its checks is left out alone: every built-in space stays (the space
    registry's built-ins are imported before a plugin's class is checked against them)."""
    import re

    plugin = SPACE_PLUGIN.replace(*change)
    code = ("from segnas.search.base import list_strategies; list_strategies(); "  # (plugins load with the methods)
            "from segnas.spaces import list_spaces; print(','.join(list_spaces()))")
    (tmp_path / "plugin_mod.py").write_text(plugin)
    env = {**os.environ, "SEGNAS_PLUGINS": "plugin_mod", "PYTHONPATH": str(tmp_path)}
    env.pop("SEGNAS_PLUGINS_WARNED", None)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    spaces = result.stdout.strip().split(",")
    assert {"cells", "encdec", "joint", "mobile", "multires"} <= set(spaces), result.stderr
    assert ("tinyspace" in spaces) == (message is None)
    assert message is None or re.search(message, result.stderr), result.stderr


def test_a_failing_plugin_leaves_out_the_proxies_it_registered(tmp_path):
    """Its proxy stayed usable, also when its import was the first of segnas's proxies."""
    (tmp_path / "plugin_p.py").write_text(
        "from segnas.proxies.common import proxy\n\n\n@proxy('myproxy')\ndef myproxy(net, batches, settings):\n"
        "    return 1.0\n\n\nraise RuntimeError('a broken plugin')\n")
    code = ("from segnas.spaces import list_spaces; list_spaces(); from segnas.proxies.common import PROXIES; "
            "print('myproxy' in PROXIES, 'synflow' in PROXIES)")
    env = {**os.environ, "SEGNAS_PLUGINS": "plugin_p", "PYTHONPATH": str(tmp_path)}
    env.pop("SEGNAS_PLUGINS_WARNED", None)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.stdout.split() == ["False", "True"], result.stdout + result.stderr
    assert "plugin_p (SEGNAS_PLUGINS) not loaded: RuntimeError: a broken plugin" in result.stderr


def test_a_failing_plugin_leaves_out_what_it_registered_and_a_good_plugin_it_imported_loads_on_its_own(tmp_path):
    (tmp_path / "plugin_b.py").write_text(SPACE_PLUGIN)  # a good plugin: registers 'tinyspace'
    (tmp_path / "plugin_a.py").write_text("import plugin_b\nraise RuntimeError('a broken plugin')\n")
    code = "from segnas.spaces import list_spaces; print(','.join(list_spaces()))"
    for order, kept in (("plugin_a", False), ("plugin_a,plugin_b", True)):
        env = {**os.environ, "SEGNAS_PLUGINS": order, "PYTHONPATH": str(tmp_path)}
        env.pop("SEGNAS_PLUGINS_WARNED", None)
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert ("tinyspace" in result.stdout.strip().split(",")) == kept and "mobile" in result.stdout, result.stderr
        assert "plugin_a (SEGNAS_PLUGINS) not loaded: RuntimeError: a broken plugin" in result.stderr
