"""Named training recipes: shipped files, checked before a run starts, under the user's settings, and
the one recipe the benchmarks and the ground truth train with."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from segnas.cli.main import app
from segnas.config.io import merged
from segnas.config.recipes import list_recipes, load_recipe
from segnas.errors import SegnasError
from segnas.evaluate.short_train import GROUNDTRUTH_RECIPE

TINY = ["--data", "synthetic", "--size", "48x64", "--steps", "2", "--threads", "1", "--set",
        "data.options={size: [48, 64], length: 4}", "--set", "model.options.width=0.25", "--set", "progress=false",
        "--set", "data.batch_size=2"]


def train(tmp_path, *args):
    result = CliRunner().invoke(app, ["train", *TINY, "--out-dir", str(tmp_path / "runs"), *[str(a) for a in args]])
    return result


def saved_config(tmp_path) -> dict:
    run = next((tmp_path / "runs").iterdir())
    return yaml.safe_load((run / "config.yaml").read_text())


@pytest.mark.parametrize("name", list_recipes())
def test_every_shipped_recipe_loads(name):
    assert load_recipe(name)


def test_a_recipe_sits_under_the_users_settings(tmp_path):
    result = train(tmp_path, "--recipe", "cpu-short", "--lr", "0.01")
    assert result.exit_code == 0, result.output
    cfg = saved_config(tmp_path)
    recipe = load_recipe("cpu-short")
    assert cfg["optim"]["lr"] == 0.01  # the option wins
    assert cfg["optim"]["warmup_iters"] == recipe["optim"]["warmup_iters"] and cfg["loss"]["kind"] == "ohem"
    assert cfg["ema_decay"] == recipe["ema_decay"] and cfg["data"]["scale"] == recipe["data"]["scale"]
    assert cfg["data"]["batch_size"] == 2  # --set wins over the recipe's 8


def test_a_recipe_under_a_config_file(tmp_path):
    config = tmp_path / "my.yaml"
    config.write_text("loss: {kind: ce}\n")
    result = train(tmp_path, "--recipe", "cpu-short", "--config", config)
    assert result.exit_code == 0, result.output
    cfg = saved_config(tmp_path)
    assert cfg["loss"]["kind"] == "ce" and cfg["loss"]["aux_weight"] == 0.4 and cfg["optim"]["lr"] == 0.08


def test_bad_recipes_are_refused_before_training(tmp_path):
    result = train(tmp_path, "--recipe", "nope")
    assert result.exit_code == 2 and "no recipe 'nope'" in result.output and "cpu-short" in result.output
    run_field = tmp_path / "r1.yaml"
    run_field.write_text("max_steps: 5\noptim: {lr: 0.1}\n")
    with pytest.raises(SegnasError, match="r1.yaml: max_steps is not a recipe setting"):
        load_recipe(run_field)
    bad = tmp_path / "r2.yaml"
    bad.write_text("optim: {lr: -1}\n")
    with pytest.raises(SegnasError, match="r2.yaml: optim.lr"):
        load_recipe(bad)
    data_field = tmp_path / "r3.yaml"
    data_field.write_text("data: {root: /x}\n")
    with pytest.raises(SegnasError, match="data.root is not a recipe setting"):
        load_recipe(data_field)
    assert not (tmp_path / "runs").exists()


def test_the_ground_truth_trains_with_the_benchmarks_recipe():
    recipe = load_recipe("cpu-short")
    assert {k: v for k, v in GROUNDTRUTH_RECIPE.items() if k not in ("eval_every", "progress")} == \
        {k: v for k, v in recipe.items() if k != "data"}
    assert merged(recipe, {"optim": {"lr": 1.0}})["optim"] == {**recipe["optim"], "lr": 1.0}
    assert recipe["optim"]["lr"] == 0.08  # merging left the recipe as it was
