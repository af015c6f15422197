"""Each setting is declared once, in its dataclass field, and reachable everywhere it applies.

Every TrainConfig and MethodOptions field must be a flag of `train.py` and of the other
commands that train (spelt the same on each, with the command's own default), must reach the
settings the command builds, and must come back from a run's config.json. Method capabilities
are declared once per method class and merged by one rule for a sum of terms.
"""

from __future__ import annotations

import ast
import json
import typing
from dataclasses import fields, replace
from pathlib import Path

import pytest
import typer.main

from amalgam.cli import field_flags
from amalgam.cli.train_cli import app
from amalgam.cli.train_options import train_config
from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.methods import METHODS, MethodOptions
from amalgam.distill.methods.base import Capabilities, Method
from amalgam.distill.methods.sum_of_terms import SumOfTerms
from amalgam.distill.option_fields import flag_name
from amalgam.distill.runs.settings import DistilSettings
from amalgam.tasks.builtin import get_task
from amalgam.tasks.spec import Roster

GROUP = typer.main.get_command(app)
COMMANDS = {"distil": GROUP, **{name: GROUP.commands[name] for name in ("compare", "teachers", "pipeline")}}
# the commands that train, and the settings each one takes; teachers are trained with labels and
# are not distilled from frozen teachers, and the pipeline passes on only these five (both its
# students' schedule and views) and the distilled student's method options
TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}
TAKES = {
    "distil": (TRAIN_FIELDS, {f.name for f in fields(MethodOptions)}),
    "compare": (TRAIN_FIELDS, {f.name for f in fields(MethodOptions)}),
    "teachers": (TRAIN_FIELDS - {"labels", "teacher_precision"}, set()),
    "pipeline": ({"epochs", "augment", "seed", "device", "quiet"}, {f.name for f in fields(MethodOptions)}),
}
OTHER_TEXT = {"opt": "sgd", "device": "cpu"}  # text settings without a list of choices


def changed(field) -> object:
    """A valid value of `field` other than its default (the device: the one this machine has)."""
    default, choices = field.default, field.metadata["choices"]
    if isinstance(default, bool):
        return not default
    if choices:
        return next(choice for choice in choices if choice != default)
    if isinstance(default, int):
        return default + 1
    if isinstance(default, float):
        return default / 2 if default else 0.25
    return OTHER_TEXT[field.name]


def argv_for(field, value: object) -> list[str]:
    flag = flag_name(field.name)
    if isinstance(value, bool):
        return [flag if value else f"--no-{flag.removeprefix('--')}"]
    return [flag, str(value)]


def options_of(command) -> dict:
    return {param.name: param for param in command.params}


@pytest.mark.parametrize("command", list(TAKES))
def test_every_setting_is_a_flag_spelt_as_its_field_says(command: str):
    train_fields, method_fields = TAKES[command]
    params = options_of(COMMANDS[command])
    for cls, names in ((TrainConfig, train_fields), (MethodOptions, method_fields)):
        for field in fields(cls):
            if field.name not in names:
                assert field.name not in params, (command, field.name)
                continue
            param = params[field.name]
            spellings = {*param.opts, *param.secondary_opts}
            assert {flag_name(field.name), *field.metadata["aliases"]} <= spellings, (command, field.name)
            assert param.default == field_flags.command_default(field, command), (command, field.name)


def test_a_setting_is_spelt_the_same_on_every_command():
    spellings: dict[str, set[tuple]] = {}
    for command in COMMANDS.values():
        for param in command.params:
            spellings.setdefault(param.name, set()).add((tuple(param.opts), tuple(param.secondary_opts)))
    for name in ("epochs", "batch_size", "lr", "seed", "student", "method", "device", "quiet",
                 "temperature", "alpha", "task"):
        assert len(spellings[name]) == 1, (name, spellings[name])
    assert "--num-epochs" in spellings["epochs"].pop()[0]


def test_each_command_has_its_own_defaults():
    defaults = {name: options_of(command) for name, command in COMMANDS.items()}
    assert defaults["distil"]["epochs"].default == 12 and defaults["teachers"]["epochs"].default == 15
    assert defaults["teachers"]["lr"].default == 2e-3 and defaults["distil"]["lr"].default == 1e-3
    assert defaults["teachers"]["augment"].default == "crop-flip"
    assert defaults["distil"]["augment"].default == TrainConfig().augment
    assert all(options["device"].default == "auto" for options in defaults.values())


@pytest.mark.parametrize("command", ["distil", "compare", "teachers", "pipeline"])
def test_every_flag_reaches_the_settings_the_command_builds(command: str):
    """Every setting given a non-default value on the command line is in the TrainConfig and
    MethodOptions the command builds from what it parsed."""
    train_fields, method_fields = TAKES[command]
    wanted_train = {f.name: changed(f) for f in fields(TrainConfig) if f.name in train_fields}
    wanted_method = {f.name: changed(f) for f in fields(MethodOptions) if f.name in method_fields}
    argv = [arg for cls, wanted in ((TrainConfig, wanted_train), (MethodOptions, wanted_method))
            for f in fields(cls) if f.name in wanted for arg in argv_for(f, wanted[f.name])]
    if command == "distil":
        params = GROUP.make_context("train.py", argv).params
    else:
        params = GROUP.commands[command].make_context(command, argv).params
    assert train_config(params) == TrainConfig(**wanted_train)
    if method_fields:
        built = MethodOptions(**{name: params[name] for name in method_fields})
        assert built == MethodOptions(**wanted_method)


def test_a_runs_config_json_gives_back_every_setting(tmp_path: Path):
    """config.json (DistilSettings) read back through `--config` sets every field as it was."""
    train = TrainConfig(**{f.name: changed(f) for f in fields(TrainConfig)})
    options = MethodOptions(**{f.name: changed(f) for f in fields(MethodOptions)})
    settings = DistilSettings(task="fashion-mini", student="resnet10t", method="kd", method_options=options,
                              train=train)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(settings.to_dict()))
    params = GROUP.make_context("train.py", ["--config", str(config)]).params
    assert train_config(params) == train
    assert MethodOptions(**{f.name: params[f.name] for f in fields(MethodOptions)}) == options


def test_no_command_declares_a_settings_flag_by_hand():
    """A field's flag reaches amalgam/cli only through `with_field_flags`: no `typer.Option(...)`
    there spells out a field's flag or alias, so no second default can drift from the field's."""
    spelt_by_hand = set()
    for path in Path(field_flags.__file__).parent.glob("*.py"):
        if path.name == "eval_cli.py":
            continue  # evaluation.py trains nothing: its --device and --quiet are its own settings
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "Option":
                spelt_by_hand |= {(path.name, arg.value) for arg in node.args
                                  if isinstance(arg, ast.Constant) and isinstance(arg.value, str)}
    for cls in (TrainConfig, MethodOptions):
        for field in fields(cls):
            spellings = {flag_name(field.name), *field.metadata["aliases"]}
            assert not {(name, flag) for name, flag in spelt_by_hand if flag in spellings}, field.name


def test_float_fields_are_typed_as_floats_for_the_cli():
    """Typer reads a flag's type from the field's annotation; an int default on a float field
    would still parse `--lr 0.5` as a float."""
    for cls in (TrainConfig, MethodOptions):
        hints = typing.get_type_hints(cls)
        for field in fields(cls):
            assert isinstance(field.default, hints[field.name]), (cls.__name__, field.name)


# --- method capabilities: declared once, merged by one rule -----------------------------------

ROSTER = Roster.from_spec(get_task("fashion-mini"))


@pytest.mark.parametrize("name", list(METHODS))
def test_a_recipe_and_its_built_method_have_the_merged_capabilities(name: str):
    factory = METHODS[name]
    built = factory(ROSTER, MethodOptions())
    assert isinstance(factory.capabilities, Capabilities)
    for capability in Capabilities.__dataclass_fields__:
        assert getattr(built, capability) == getattr(built.capabilities, capability)
        assert getattr(factory, capability) == getattr(factory.capabilities, capability)
    if isinstance(factory, SumOfTerms):
        assert built.capabilities == Capabilities.merged([part(ROSTER, MethodOptions()).capabilities
                                                          for part in factory.parts])
    else:
        assert built.capabilities == factory.capabilities  # no option changes them by default


def test_options_that_ask_for_a_fit_change_the_built_methods_capabilities():
    options = MethodOptions(target_neighbours=3)
    recipe = METHODS["fitnet+amalgam-kd"]
    built = recipe(ROSTER, options)
    assert built.fits_training_set and built.fit_reads_features and not built.needs_labels
    assert built.needs_features and built.hint_features_only and built.uses_teachers
    assert not recipe.fits_training_set  # unbuilt, at no options
    assert built.options_used == ("temperature", "class_prior", "target_neighbours", "target_gate",
                                    "gate_warmup", "hard_target_weight", "hint_weight")


def test_merging_reads_maps_as_hints_only_if_every_reader_does():
    hints = Capabilities(needs_features=True, hint_features_only=True, needs_labels=False)
    maps = Capabilities(needs_features=True)
    logits = Capabilities(options_used=("temperature",))
    assert Capabilities.merged([logits, hints]).hint_features_only
    assert not Capabilities.merged([hints, maps]).hint_features_only
    assert not Capabilities.merged([logits]).needs_features
    assert Capabilities.merged([logits, hints]).needs_labels  # any part that reads labels


def test_a_capability_stated_as_a_class_attribute_is_folded_into_capabilities():
    class Plain(Method):
        name = "plain-for-test"
        uses_teachers = False
        needs_labels = False

    assert Plain.capabilities == replace(Capabilities(), uses_teachers=False, needs_labels=False)
    assert not Plain.uses_teachers and not Plain(ROSTER, MethodOptions()).needs_labels
    assert not SumOfTerms("plain-twice", (Plain,)).uses_teachers
