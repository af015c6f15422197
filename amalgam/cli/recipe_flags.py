"""Fill in the default recipe (amalgam/distill/runs/recipes.py) for the flags a user did not set."""

from __future__ import annotations

import typer

from amalgam.distill.runs.recipes import recipe_defaults

# Where a value came from when the user set it: typed, from --config, or from the environment
USER_SOURCES = ("COMMANDLINE", "DEFAULT_MAP", "ENVIRONMENT", "PROMPT")


def set_by_user(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in USER_SOURCES


def apply_recipe(ctx: typer.Context, method: str, labels: str, *tables: dict) -> str:
    """The method to run, with the recipe for `labels` written into `tables` (the command's
    grouped flag values, e.g. its TrainConfig and MethodOptions dicts) for every flag the user
    left at its default."""
    values = recipe_defaults(labels, {name for name in ctx.params if set_by_user(ctx, name)})
    for key, value in values.items():
        for table in tables:
            if key in table:
                table[key] = value
    return str(values.get("method", method))
