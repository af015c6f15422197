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
