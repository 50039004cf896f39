"""Named training recipes: settings files of a training's optimizer, loss, schedule, augmentation
and precision (``segnas/recipes/<name>.yaml``) that any network trains with (``segnas train
--recipe NAME``), so that a comparison trains every network alike.

A recipe is a partial training config: it may set any ``TrainConfig`` section except what names the
run, the network, the data or the budget (``RUN_FIELDS``). Its settings sit under the config file
and the command-line options: a setting given there wins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segnas.config.io import build_config, merged, read_settings
from segnas.config.train import DataConfig, TrainConfig
from segnas.errors import SegnasError

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
#: What a recipe may not set: the run, the network, the dataset and the budget are the user's.
RUN_FIELDS = frozenset({"job", "model", "epochs", "time_budget_min", "max_steps", "budget_clock", "eval_every",
                        "threads", "device", "seed", "out_dir", "progress", "sync_bn"})
RUN_DATA_FIELDS = frozenset({"name", "root", "train_split", "val_split", "crop_size", "base_size", "workers",
                             "cache", "options"})


def list_recipes() -> list[str]:
    """The names of the recipes that ship with segnas."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(name: str | Path) -> Path:
    """The file of a shipped recipe name, or ``name`` itself when it is a YAML file."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if path.is_file():
            return path
        raise SegnasError(f"recipe: {path}: recipe file not found (shipped recipes: {', '.join(list_recipes())})")
    shipped = RECIPES_DIR / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    raise SegnasError(f"recipe: no recipe {str(name)!r}; choose one of {', '.join(list_recipes())} "
                      "or give a .yaml file")


def load_recipe(name: str | Path) -> dict[str, Any]:
    """The settings of a recipe (a shipped name or a YAML file), checked: only recipe fields, valid values."""
    path = recipe_path(name)
    data = read_settings(path)
    check_recipe(data, str(path))
    return data


#: What a recipe leaves to the run, filled in only to check the recipe's rules across settings
#: (``data.crop_fractions`` needs a crop size); the run's own values are checked when it starts.
RUN_STAND_INS: dict[str, Any] = {"data": {"crop_size": [64, 64]}}


def refuse_run_fields(data: dict[str, Any], where: str) -> None:
    """Refuse, naming ``where``, recipe settings that set the run, network, data or budget."""
    run = sorted(set(data) & RUN_FIELDS) + sorted(f"data.{k}" for k in set(data.get("data") or {}) & RUN_DATA_FIELDS)
    if run:
        raise SegnasError(f"{where}: {run[0]} is not a recipe setting (a recipe leaves the run, network, data and "
                          "budget to the user)")


def check_recipe(data: dict[str, Any], where: str) -> None:
    """Refuse, naming ``where``, recipe settings that set the run, network, data or budget, are
    unknown, or have bad values."""
    refuse_run_fields(data, where)
    build_config(TrainConfig, merged(RUN_STAND_INS, data), where)  # unknown fields and bad values, named


def recipe_data(recipe: dict[str, Any], data: DataConfig) -> dict[str, Any]:
    """The data settings of a training with ``recipe``: its augmentation under ``data``'s settings
    that differ from the defaults (so that a run's settings, read back in full from its config.yaml,
    give the same training)."""
    return merged(recipe.get("data", {}), data.model_dump(mode="json", exclude_defaults=True))


def recipe_with(name: str | Path, overrides: dict[str, Any], where: str, new: bool = False) -> dict[str, Any]:
    """Recipe ``name``'s settings with ``overrides`` on top, checked together (the overrides may not
    set the run; together they must make a valid training), errors named by ``where``."""
    refuse_run_fields(overrides, where)
    recipe = merged(load_recipe(name), overrides)
    build_config(TrainConfig, merged(RUN_STAND_INS, recipe), where, new=new)
    return recipe
