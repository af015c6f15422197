"""amalgam: distil one small student from several partial teachers, and grade it."""

import os
from pathlib import Path

__version__ = "0.1.0"

# Where checkpoints/, runs/, evaluation/, data/ and .cache/ live: the repository, unless
# AMALGAM_HOME points elsewhere (tests, or a lab keeping its artefacts on another disk).
REPO_ROOT = Path(__file__).resolve().parent.parent
PROJECT_ROOT = Path(os.environ.get("AMALGAM_HOME") or REPO_ROOT)
