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


def test_the_shipped_recipes_are_found():
    assert "cpu-short" in list_recipes()


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


def _final_training(tmp_path, final: dict, teacher=None, **search):
    """The TrainConfig a search's final training of its found network would run with."""
    from types import SimpleNamespace

    from segnas.jobs.search import final_train_config, make_settings

    settings = make_settings("random", {"data": {"name": "synthetic", "crop_size": [48, 64], "batch_size": 2},
                                        "latency": {"target_ms": 10}, "final": final, "out_dir": str(tmp_path),
                                        **search})
    ctx = SimpleNamespace(settings=settings, run=SimpleNamespace(path=tmp_path))
    net = SimpleNamespace(name="arch", role="found", init=None)
    return final_train_config(ctx, net, teacher)


def test_a_searchs_final_training_uses_the_named_recipe_under_the_searchs_data_settings(tmp_path):
    recipe = load_recipe("cpu-short")
    cfg = _final_training(tmp_path, {"steps": 5})
    assert cfg.optim.model_dump(exclude_unset=True) == recipe["optim"]
    assert cfg.loss.kind == recipe["loss"]["kind"] and cfg.ema_decay == recipe["ema_decay"] and cfg.bf16
    assert cfg.data.batch_size == 2 and cfg.data.jitter == recipe["data"]["jitter"]  # the search's data wins
    assert cfg.max_steps == 5 and cfg.model.arch == str(tmp_path / "arch.json")
    # scored as often as `segnas train` scores (about 100 times at most), unless final.eval_every says
    assert cfg.eval_every is None and _final_training(tmp_path, {"steps": 5, "eval_every": 3}).eval_every == 3
    swa = _final_training(tmp_path, {"steps": 5, "overrides": {"ema_decay": None, "swa_start": 0.75, "bf16": False}})
    assert swa.ema_decay is None and swa.swa_start == 0.75 and not swa.bf16
    distilled = _final_training(tmp_path, {"steps": 5}, teacher=tmp_path / "teacher.pt")
    assert distilled.loss.teacher == str(tmp_path / "teacher.pt") and distilled.loss.aux_weight == 0.2
    assert distilled.loss.kind == "ohem"
    retuned = _final_training(tmp_path, {"steps": 5, "overrides": {"loss": {"kd_weight": 0.3, "aux_weight": 0.1}}},
                              teacher=tmp_path / "teacher.pt")  # the user's overrides win over the KD defaults
    assert retuned.loss.kd_weight == 0.3 and retuned.loss.aux_weight == 0.1 and retuned.loss.teacher


@pytest.mark.parametrize("final, message", [
    ({"recipe": "nope"}, "final.recipe: no recipe 'nope'"),
    ({"overrides": {"max_steps": 3}}, "final.overrides: max_steps is not a recipe setting"),
    ({"overrides": {"optim": {"lr": -1}}}, "final.overrides: optim.lr"),
])
def test_a_bad_final_recipe_is_refused_before_the_search(tmp_path, final, message):
    with pytest.raises(SegnasError, match=message.replace(".", r"\.").replace("(", r"\(")):
        _final_training(tmp_path, final)


def test_a_search_run_of_an_earlier_segnas_reads_its_final_optimizer_as_overrides(tmp_path):
    from segnas.config.io import load_config
    from segnas.jobs.search import make_settings, settings_class

    def saved(final: dict, **search):
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump({"method": "random", "latency": {"target_ms": 10}, "final": final, **search}))
        return load_config(settings_class("random"), path, saved=True)

    sgd = {"name": "sgd", "lr": 0.08, "weight_decay": 1e-4, "warmup_iters": 100}
    old = saved({"steps": 5, "ema_decay": None, "optim": {**sgd, "lr": 0.05}})
    assert old.final.overrides == {"ema_decay": None, "optim": {**sgd, "lr": 0.05}, "bf16": False}
    # the old defaults were cpu-short's, but the final training followed the search's bf16 (off by default)
    assert saved({"ema_decay": 0.998, "optim": sgd}).final.overrides == {"bf16": False}
    assert saved({"ema_decay": 0.998}, bf16=True).final == make_settings("random", {"latency": {"target_ms": 10}}).final


@pytest.mark.parametrize("key", ["optim", "ema_decay"])
def test_a_users_final_optimizer_outside_the_overrides_is_refused_with_where_it_goes(tmp_path, key):
    value = {"lr": 0.05} if key == "optim" else 0.99
    with pytest.raises(SegnasError, match=rf"final\.{key}: .* go under final\.overrides \(final\.overrides\.{key}\)"):
        _final_training(tmp_path, {key: value})


def test_final_overrides_are_checked_with_the_recipe_before_the_search(tmp_path):
    # SWA over cpu-short's EMA: refused at once, not after the search
    with pytest.raises(SegnasError, match="recipe cpu-short with final.overrides: .*ema_decay or swa_start"):
        _final_training(tmp_path, {"overrides": {"swa_start": 0.75}})
    cfg = _final_training(tmp_path, {"steps": 5, "overrides": {"ema_decay": None, "swa_start": 0.75,
                                                               "data": {"crop_fractions": [1.0, 0.5]}}})
    assert cfg.swa_start == 0.75 and cfg.data.crop_fractions == [1.0, 0.5]


def test_crop_fractions_may_be_part_of_a_recipe_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("data: {crop_fractions: [1.0, 0.75]}\nema_decay: null\nswa_start: 0.8\n")
    assert load_recipe(path)["data"]["crop_fractions"] == [1.0, 0.75]
    result = train(tmp_path, "--recipe", path)
    assert result.exit_code == 0, result.output
    assert saved_config(tmp_path)["data"]["crop_fractions"] == [1.0, 0.75]


def test_a_recipe_file_of_a_search_is_kept_by_its_absolute_path(tmp_path, monkeypatch):
    (tmp_path / "mine.yaml").write_text("optim: {lr: 0.02}\n")
    monkeypatch.chdir(tmp_path)
    cfg = _final_training(tmp_path, {"steps": 5, "recipe": "mine.yaml"})
    assert cfg.optim.lr == 0.02
    from segnas.jobs.search import make_settings
    assert make_settings("random", {"latency": {"target_ms": 10}, "final": {"recipe": "mine.yaml"}}).final.recipe == \
        str(tmp_path / "mine.yaml")


def test_the_final_trainings_data_is_the_same_after_the_settings_are_saved_and_read_back(tmp_path):
    """A resumed search reads its settings back from config.yaml (every field written): the recipe's
    augmentation must still sit under the data settings that were given."""
    from types import SimpleNamespace

    from segnas.config.io import load_config, save_config
    from segnas.jobs.search import final_train_config, make_settings, settings_class

    settings = make_settings("random", {"data": {"name": "synthetic", "crop_size": [48, 64], "batch_size": 2},
                                        "latency": {"target_ms": 10}, "out_dir": str(tmp_path),
                                        "final": {"overrides": {"data": {"blur_prob": 0.3, "scale": [0.5, 2.0]}}}})
    save_config(settings, tmp_path / "config.yaml")
    again = load_config(settings_class("random"), tmp_path / "config.yaml")
    net = SimpleNamespace(name="arch", role="found", init=None)
    made = [final_train_config(SimpleNamespace(settings=s, run=SimpleNamespace(path=tmp_path)), net, None).data
            for s in (settings, again)]
    assert made[0] == made[1] and made[0].blur_prob == 0.3 and made[0].scale == (0.5, 2.0) and made[0].batch_size == 2
