"""amalgam: distil one small student from several partial teachers, and grade it."""

import os
from pathlib import Path

__version__ = "0.1.0"


def artefact_home() -> Path:
    """Where checkpoints/, runs/, evaluation/, reports/, data/ and .cache/ live.

    `$AMALGAM_HOME` when set (a lab keeping its artefacts on another disk, or the tests),
    else the directory the command was started in. Never the package's own folder: after
    `pip install .` that is site-packages, which is neither the user's nor writable.
    """
    return Path(os.environ.get("AMALGAM_HOME") or Path.cwd()).resolve()


PROJECT_ROOT = artefact_home()

# The library's public names (docs/api.md). They live in the top layer (amalgam.api), which
# imports this module, so they are loaded on first use (PEP 562), never at import: `import
# amalgam` stays as light as before and no cycle forms (tests/test_import_layers.py allows
# exactly this edge).
API_NAMES = ("DistilResult", "Teacher", "UserError", "distil", "evaluate")
__all__ = ["PROJECT_ROOT", "__version__", "artefact_home", *API_NAMES]


def __getattr__(name: str):
    if name in API_NAMES:
        from amalgam import api

        return getattr(api, name)
    raise AttributeError(f"module 'amalgam' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *API_NAMES})
