"""Release assets (CAS771 student checkpoints and task data): one import point for callers.

The work is split into manifest.py (what to fetch, and the record of what was fetched),
fetch.py (downloading and checking) and unpack.py (safe extraction); callers should not
need to know that.
"""

from amalgam.harness.fetch import fetch, fetch_asset
from amalgam.harness.manifest import (
    DEFAULT_MANIFEST,
    Asset,
    is_present,
    load_manifest,
    marker_path,
    released_student,
)
from amalgam.harness.unpack import sha256_file

__all__ = [
    "DEFAULT_MANIFEST",
    "Asset",
    "fetch",
    "fetch_asset",
    "is_present",
    "load_manifest",
    "marker_path",
    "released_student",
    "sha256_file",
]
