"""`--config FILE`: a TOML, YAML or JSON file that sets the defaults of a command's flags.

The file becomes Click's `ctx.default_map`, so a flag given on the command line still wins,
and every value is checked here, once, against the flag it sets: an unknown key or a value of
the wrong type is a one-line error naming the file and the key. Keys are flag names without
the dashes (`batch_size`, `batch-size`, or any alias such as `num_epochs`); a table named after
a subcommand (`[teachers]`) sets that subcommand's defaults. A run's `config.json` is itself a
valid file: its `train` and `method_options` tables are read as if their keys were top-level, and
its record-only `roster` is skipped.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import tomllib
import typing
from pathlib import Path
from typing import Any

import typer

from amalgam.distill.runs.settings import RECORD_ONLY_KEY
from amalgam.errors import UserError

SECTIONS = ("train", "method_options")  # config.json's nested tables (DistilSettings)
RENAMED = {"run_name": "run"}  # config.json fields → parameter names, where they differ
# Click's type names; older Click releases (Typer 0.27) call them int / bool, newer integer / boolean
_CLICK_TYPES = {"integer": int, "int": int, "float": float, "boolean": bool, "bool": bool,
                "text": str, "str": str, "path": str}


def read_config_file(path: Path) -> dict:
    """The file's top-level table; the format is chosen by suffix."""
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise UserError(f"--config {path}: use a .toml, .yaml/.yml or .json file")
    if not path.is_file():
        raise UserError(f"--config {path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"--config {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                        f"{exc.start}); save it as UTF-8") from exc
    except OSError as exc:
        raise UserError(f"--config {path} cannot be read ({exc.strerror}); check its permissions") from exc
    try:
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            data = _read_yaml(path, text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, ValueError) as exc:
        kind = suffix.lstrip(".").upper().replace("YML", "YAML")
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(f"--config {path} is not valid {kind} ({first}); fix the file") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"--config {path} holds a {type(data).__name__}, not a table of flag = value")
    return data


def _read_yaml(path: Path, text: str) -> Any:
    if importlib.util.find_spec("yaml") is None:
        raise UserError(f"--config {path} is YAML, which needs PyYAML: pip install pyyaml, "
                        "or write the file as TOML")
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(" ".join(str(exc).split())) from exc


def default_map_for(command: Any, table: dict, where: str) -> dict:
    """`table` checked against `command`'s options and turned into its default_map."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if key == RECORD_ONLY_KEY:
            continue  # config.json's record for the reader (the task's roster), derived, not a setting
        if key in SECTIONS and isinstance(value, dict):
            flat.update(value)  # a run's config.json: train.* and method_options.* are flags
        else:
            flat[key] = value
    options = _options_by_key(command)
    commands = getattr(command, "commands", {})
    defaults: dict[str, Any] = {}
    for key, value in flat.items():
        if key in commands and isinstance(value, dict):
            defaults[key] = default_map_for(commands[key], value, f"{where} [{key}]")
            continue
        param = options.get(_normal(key)) or options.get(RENAMED.get(_normal(key), ""))
        if param is None:
            raise UserError(_unknown(key, where, options, commands))
        defaults[param.name] = _checked(param, key, value, where)
    return defaults


def _normal(key: str) -> str:
    return str(key).lstrip("-").replace("-", "_")


def _options_by_key(command: Any) -> dict[str, Any]:
    """Each option under its parameter name and under every long spelling (`--num-epochs` → num_epochs)."""
    options: dict[str, Any] = {}
    for param in command.params:
        if getattr(param, "param_type_name", "") != "option" or param.name in ("config", "help"):
            continue
        options[param.name] = param
        for opt in param.opts:
            if opt.startswith("--"):
                options.setdefault(_normal(opt), param)
    return options


def _unknown(key: str, where: str, options: dict, commands: dict) -> str:
    close = difflib.get_close_matches(_normal(key), [*options, *commands], n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return (f"{where}: unknown key {key!r}{hint}; keys are flag names without dashes, "
            "e.g. batch_size = 32 (see --help)")


def _expected(param: Any) -> type | None:
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if annotation is None:  # Typer releases built on Click's own types
        annotation = _CLICK_TYPES.get(getattr(getattr(param, "type", None), "name", ""))
    if typing.get_origin(annotation) is list:  # a repeatable flag: a list of quoted text
        return list
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return args[0] if len(args) == 1 and isinstance(args[0], type) else None


def _checked(param: Any, key: str, value: Any, where: str) -> Any:
    """The value, if it has the flag's type (an int for a float flag is fine); else one line."""
    if value is None:
        if param.default is None:
            return None
        raise UserError(f"{where}: {key} cannot be empty (null); give a value or leave the key out")
    expected = _expected(param)
    if expected is None:
        return value
    if expected is bool:
        ok = isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif expected is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif expected is list:
        ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
    else:  # str, Path: text, quoted
        ok = isinstance(value, str)
    if not ok:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        what = {bool: "true or false", int: "a whole number", float: "a number",
                list: "a list of quoted text"}.get(expected, "quoted text")
        raise UserError(f"{where}: {key} must be {what}, got {shown}; fix the file")
    return value


def load_config(ctx: typer.Context, param: typer.CallbackParam, value: Path | None) -> Path | None:
    """The eager `--config` callback: fill `ctx.default_map` before any other option is read."""
    if value is None or ctx.resilient_parsing:
        return value
    table, where = read_config_file(value), str(value)
    own = table.get(ctx.info_name) if ctx.parent is not None else None
    if isinstance(own, dict):  # `train.py teachers --config f` reads f's [teachers] table, as
        table, where = own, f"{value} [{ctx.info_name}]"  # `train.py --config f teachers` does
    defaults = default_map_for(ctx.command, table, where)
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


ConfigOpt = typer.Option(
    None,
    "--config",
    is_eager=True,
    callback=load_config,
    metavar="FILE",
    help="defaults for any flag from a TOML, YAML or JSON file (a run's config.json works); "
    "flags given here win",
)
