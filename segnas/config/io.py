"""YAML reading/writing of pydantic settings with user-facing errors."""

from __future__ import annotations

import copy
import difflib
import math
import os
import re
import typing
from pathlib import Path
from typing import Any, Mapping, Optional, TypeVar

import yaml
from pydantic import BaseModel, ValidationError, ValidationInfo

from segnas.errors import SegnasError
from segnas.utils import atomic_write_text, read_text_file

M = TypeVar("M", bound=BaseModel)


def settings_model(annotation: Any) -> type[BaseModel] | None:
    """The settings class a field holds (itself, or inside Optional/Union), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for m in map(settings_model, typing.get_args(annotation)) if m is not None), None)


def _unknown_setting(model: type[BaseModel] | None, path: list[str]) -> str:
    """'unknown setting', with the sub-section that has that very name (``shrink_threshold`` ->
    ``ssr.shrink_threshold``), else the closest name of its section when one is close."""
    for part in path[:-1]:
        field = model.model_fields.get(part) if model else None
        model = settings_model(field.annotation) if field else None
    if model is None:
        return "unknown setting"
    known_as = [name for name, field in model.model_fields.items() if path[-1] == _extra(field).get("also_called")]
    if known_as:  # (minutes -> time_budget_min: what `segnas train --minutes` sets)
        return f"unknown setting (did you mean {'.'.join([*path[:-1], known_as[0]])}?)"
    owners = [name for name, field in model.model_fields.items()
              if path[-1] in getattr(settings_model(field.annotation), "model_fields", {})]
    if owners:  # the very name, one section down (saswot.inits -> saswot.scoring.inits)
        return f"unknown setting (did you mean {'.'.join([*path[:-1], owners[0], path[-1]])}?)"
    close = difflib.get_close_matches(path[-1], list(model.model_fields), n=1, cutoff=0.6)
    return "unknown setting" + (f" (did you mean {'.'.join([*path[:-1], close[0]])}?)" if close else "")


def _takes_a_value(model: type[BaseModel] | None, path: list[str]) -> bool:
    """Whether the setting at ``path`` of settings class ``model`` takes a plain value (a number,
    text, a size...), not a section of settings or a mapping."""
    field = None
    for part in path:
        field = model.model_fields.get(part) if model else None
        if field is None:
            return False
        model = settings_model(field.annotation)
    if field is None or model is not None:
        return False
    args = [field.annotation, *typing.get_args(field.annotation)]
    return not any(a is dict or typing.get_origin(a) is dict or a is Any for a in args)


def validation_message(exc: ValidationError, source: str, flags: Optional[Mapping[str, str]] = None,
                       model: type[BaseModel] | None = None) -> str:
    """First pydantic error as 'source: field.path: message (got value)'; a field the user gave as
    a command-line option (``flags``: field path -> option, "" for one given by its own name) is
    named by that option too, not by ``source``; a flag that is not an option (a Python argument)
    names the field alone. A key no
    settings class (``model``) has is an unknown setting, with the closest name when one is close."""
    err = exc.errors()[0]
    path = [str(p) for p in err["loc"] if "[" not in str(p)]  # without pydantic's union-member tags
    loc = ".".join(path)
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden" and path:
        msg = _unknown_setting(model, path)
    field, sep, rest = msg.partition(": ")
    if sep and field.isidentifier() and field.islower():  # a section's check naming one of its fields
        loc, msg = f"{loc}.{field}" if loc else field, rest
    elif isinstance(err.get("input"), dict) and err["input"] and _takes_a_value(model, path):
        # settings under a setting that takes a value (``optim.schedule.x``): named, not the value's rule
        key = str(next(iter(err["input"])))
        loc, msg = f"{loc}.{key}", f"unknown setting: {loc} takes a value ({msg}), not settings under it"
    value = err.get("input")  # said unless the message says it (a number's bound, "greater than 0", does not)
    shown = ("input" in err and not isinstance(value, dict) and not re.search(r"\bgot\b", msg)
             and (isinstance(value, (int, float)) or repr(value) not in msg))
    got = f" (got {err['input']!r})" if shown else ""
    # (one value given to several fields, as --size is, fails each of them the same way: counted once)
    others = len({(e["msg"], repr(e.get("input"))) for e in exc.errors()} - {(err["msg"], repr(err.get("input")))})
    more = f" [and {others} more error{'s' * (others > 1)}]" if others else ""
    if flags and loc in flags:  # an option, or the caller's name of the field ("" for --set: its own name says it)
        named = f"{flags[loc]} ({loc})" if flags[loc].startswith("-") else flags[loc] or loc
        return f"{named}: {msg}{got}{more}"
    if not loc:  # a check of the whole settings: its message names the fields
        return f"{source}: {msg}{got}{more}"
    return f"{source}: {loc}: {msg}{got}{more}"


#: Validation context of settings read back from a run directory (``load_config(saved=True)``):
#: validators that upgrade the form an earlier segnas saved apply only there, never to a user's file.
SAVED_RUN = "saved_run"
#: Validation context of the settings a user gives for a new run (``build_config(new=True)``: the
#: command line, a comparison's methods when it starts): the checks that refuse a setting which would
#: do nothing apply there only, so that a run directory's settings, and those segnas derives from
#: them, load as they were saved.
NEW_SETTINGS = "new_settings"


def new_settings(info: ValidationInfo) -> bool:
    """Whether a validator runs on a user's settings for a new run (``NEW_SETTINGS``)."""
    return bool((info.context or {}).get(NEW_SETTINGS))


def build_config(cls: type[M], data: dict[str, Any], source: str = "config",
                 flags: Optional[Mapping[str, str]] = None, saved: bool = False, new: bool = False) -> M:
    """Validate a dict into ``cls``; a SegnasError naming the field (and the option that set it,
    from ``flags``) on failure. ``saved``: the settings a run directory holds (see ``SAVED_RUN``);
    ``new``: a user's settings for a new run (``NEW_SETTINGS``)."""
    context = {SAVED_RUN: True} if saved else {NEW_SETTINGS: True} if new else None
    try:
        return cls.model_validate(data, context=context)
    except ValidationError as exc:
        raise SegnasError(validation_message(exc, source, flags, cls)) from None


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last one
    silently: a second ``optim:`` section would drop the first's settings)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *anchor``: keys the mapping may override
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the constructor's own error names it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice in one mapping",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> Any:
    """The YAML document in ``path``; SegnasError naming the file and line when it is not valid YAML
    (a key given twice in one mapping included)."""
    return parse_yaml(read_text_file(path), path)


#: A hex colour YAML reads as a comment: unquoted, after a list's opening, a comma, a key or a dash.
UNQUOTED_HEX = re.compile(r"[\[,:-]\s*#(?:[0-9a-fA-F]{3}){1,2}\s*(?:[,\]]|$)")


def parse_yaml(text: str, path: str | Path) -> Any:
    """The YAML document ``text`` read from ``path`` (``read_yaml`` for text already read)."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        if mark is not None and not text[mark.index:].strip():  # at the end: where the unclosed part opened
            mark = getattr(exc, "context_mark", None) or mark
        where = f" line {mark.line + 1}" if mark else ""
        comment = next((i + 1 for i, line in enumerate(text.splitlines()) if UNQUOTED_HEX.search(line)), None)
        hint = (f"; line {comment}: # starts a comment in YAML: quote a hex colour ('#804080')"
                if comment is not None else "")
        raise SegnasError(f"{path}:{where} invalid YAML ({getattr(exc, 'problem', exc)}){hint}") from None


def read_settings(path: str | Path) -> dict[str, Any]:
    """The settings a YAML file holds (a settings file, a recipe, a run's config.yaml): an empty
    file holds none; SegnasError naming the file when its top level is not a mapping."""
    data = read_yaml(Path(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SegnasError(f"{path}: expected a mapping of settings (key: value lines) at the top level")
    return data


def load_config(cls: type[M], path: str | Path, overrides: dict[str, Any] | None = None,
                flags: Optional[Mapping[str, str]] = None, under: Optional[dict[str, Any]] = None,
                saved: bool = False, new: bool = False) -> M:
    """Read YAML ``path`` into ``cls``, applying dotted-key ``overrides`` (e.g. {'optim.lr': 0.1});
    ``under``: settings the file's own override (a recipe), nested sections merged; ``saved``: a run
    directory's config.yaml (``SAVED_RUN``); ``new``: a user's settings for a new run (``NEW_SETTINGS``)."""
    path = Path(path)
    if not path.is_file():
        raise SegnasError(f"{path}: config file not found")
    data = read_settings(path)
    if under:
        data = merged(under, data)
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value)
    return build_config(cls, data, str(path), flags, saved, new)


def has_setting(cls: type, path: str) -> bool:
    """Whether the settings class ``cls`` has the setting at dotted ``path`` (e.g. ``data.root``)."""
    node: Any = cls
    for name in path.split("."):
        field = getattr(node, "model_fields", {}).get(name)
        if field is None:
            return False
        node = field.annotation
    return True


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{a: {b: 1}}`` -> ``{"a.b": 1}`` (settings by their dotted key)."""
    out: dict[str, Any] = {}
    for k, v in mapping.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base`` (neither changed): nested sections merged, ``over``'s values win."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


#: An "HxW" size given as text (to --set, or in a settings file).
SIZE_TEXT = re.compile(r"\d+\s*x\s*\d+", re.IGNORECASE)


def comparable_value(value: Any) -> Any:
    """A size as text ("48x64") or as a pair ([48, 64]), a number as text ("1e-2", which YAML reads
    as text) or as a number, in one form; any other value as it is."""
    if isinstance(value, str) and SIZE_TEXT.fullmatch(value.strip()):
        return tuple(int(v) for v in re.split(r"\s*x\s*", value.strip().lower()))
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return number if math.isfinite(number) else value  # ("nan" equals "nan" as text, not as a number)
    return tuple(value) if isinstance(value, list) else value


def with_sets(overrides: dict[str, Any], flags: Mapping[str, str], sets: Mapping[str, Any],
              given_as: str = "--set") -> dict[str, Any]:
    """``overrides`` (settings the options gave; ``flags``: setting -> the option that gave it alone)
    with the ``sets`` values (``--set``, or a Python caller's ``settings``: ``given_as``) on top; a
    setting an option and ``sets`` give different values is refused. (An option that sets several
    settings, such as a search's ``--size``, may be refined by ``--set`` of one of them: leave those
    out of ``flags``.)"""
    for key, value in sets.items():
        if key in flags and key in overrides and comparable_value(overrides[key]) != comparable_value(value):
            shown = value if given_as == "--set" else repr(value)  # (--set's values as typed)
            raise SegnasError(f"{flags[key]} and {given_as} {key}={shown}: two values for {key}; give one of them")
    return {**overrides, **sets}


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data['a']['b'] = value`` for key 'a.b', creating levels as needed."""
    *parents, last = key.split(".")
    node = data
    for i, p in enumerate(parents):
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise SegnasError(f"{key}: {'.'.join(parents[:i + 1])} is a value, not a section of settings")
    node[last] = value


#: First line of every saved config.yaml.
SAVED_HEADER = ("# File and folder settings are stored as absolute paths (resolved from the folder the job "
                "was started in), so that --resume works from any folder.\n")


def _extra(field: Any) -> dict[str, Any]:
    """A field's marks (``json_schema_extra``: ``path``, ``also_called``)."""
    return field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}


def path_marker(field: Any) -> Any:
    """A field's ``PATH``/``NAME_OR_FILE`` mark (``json_schema_extra["path"]``: True, "file"), or None."""
    return _extra(field).get("path")


def absolute_paths(config: BaseModel, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (``config`` dumped) with every setting marked as a path (``json_schema_extra``
    ``{"path": True}``) made absolute against the current folder."""
    for name, field in type(config).model_fields.items():
        value, marker = getattr(config, name, None), path_marker(field)
        if isinstance(value, BaseModel) and isinstance(data.get(name), dict):
            absolute_paths(value, data[name])
        elif marker and isinstance(data.get(name), str) and data[name] and (
                marker is True or names_a_file(data[name])):
            data[name] = os.path.abspath(os.path.expanduser(data[name]))
    return data


def names_a_file(value: str) -> bool:
    """Whether a setting that holds a name or a file (``NAME_OR_FILE``) holds a file: a path with a
    folder or a file suffix, or an existing file (names have neither)."""
    return "/" in value or os.sep in value or Path(value).suffix != "" or os.path.isfile(value)


def saved_form(config: BaseModel) -> dict[str, Any]:
    """Settings as ``save_config`` writes them: dumped, file and folder settings absolute (two
    settings compare equal this way whether they were built here or read back from a run)."""
    return absolute_paths(config, config.model_dump(mode="json"))


def save_config(config: BaseModel, path: str | Path) -> None:
    """Atomically write settings as YAML, with file and folder settings as absolute paths."""
    data = saved_form(config)
    atomic_write_text(path, SAVED_HEADER + yaml.safe_dump(data, sort_keys=False))
