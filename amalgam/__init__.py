"""amalgam: distil one small student from several partial teachers, and grade it."""

from pathlib import Path

__version__ = "0.1.0"

PROJECT_ROOT = Path(__file__).resolve().parent.parent
