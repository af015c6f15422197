"""What a fetched asset may write, short downloads, trust on first use, and the shipped manifest.

Everything is served from the 127.0.0.1 server fixture; nothing here touches the internet.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import amalgam.harness.manifest as manifest_module
from amalgam.errors import UserError
from amalgam.harness.assets import (
    DEFAULT_MANIFEST,
    fetch_asset,
    is_present,
    load_manifest,
    marker_path,
    released_student,
)
from tests.helpers.file_server import (
    FileServer,
    files_under,
    make_asset,
    make_zip,
    quiet_console,
    said,
    sha,
    write_manifest,
)
from tests.helpers.front_ends import REPO, assert_one_line_error


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    return path


MODEL = "best_models/TaskA/student.pth"


def release_asset(server: FileServer, payload: bytes, sha256: str = "", **overrides: object):
    """A CAS771-like asset: unpacked into the home itself, providing one checkpoint."""
    fields: dict[str, object] = {"dest": ".", "provides": (MODEL,)}
    fields.update(overrides)
    return make_asset(server.publish("pack.zip", payload), sha256, **fields)


# --- 1. an archive may not replace the project's own files ------------------------------------


@pytest.mark.parametrize(
    ("member", "needle"),
    [("train.py", "project source"), ("notes/readme.txt", "outside the folders"),
     ("data/.amalgam-fetched-pack.json", "bookkeeping"), (".git/hooks/post-checkout", "version-control")],
    ids=["source", "outside-allowed", "forged-record", "git-hook"],
)
def test_archive_member_outside_its_place_is_refused(
    server: FileServer, root: Path, member: str, needle: str
) -> None:
    (root / "train.py").write_text("print('the real trainer')\n")
    payload = make_zip({MODEL: b"weights", member: b"import os; os.system('payload')\n"})
    asset = release_asset(server, payload)  # dest ".", sha256 "": the reported attack

    with pytest.raises(UserError) as caught:
        fetch_asset(asset, root, quiet=True)

    message = str(caught.value)
    assert needle in message and repr(member) in message and "pack" in message
    assert "nothing was extracted" in message and "\n" not in message
    assert (root / "train.py").read_text() == "print('the real trainer')\n"
    assert not (root / MODEL).exists()  # the whole archive is checked before anything lands
    assert not (root / member).exists() or member == "train.py"
    assert not marker_path(asset, root).exists()


def test_plain_file_cannot_land_on_source(server: FileServer, root: Path) -> None:
    (root / "train.py").write_text("real")
    url = server.publish("train.py", b"payload")
    asset = make_asset(url, sha(b"payload"), archive="none", filename="train.py", dest=".")

    with pytest.raises(UserError, match="project source"):
        fetch_asset(asset, root, quiet=True)

    assert (root / "train.py").read_text() == "real"


def test_provides_folders_are_allowed(server: FileServer, root: Path) -> None:
    payload = make_zip({"extras/table.csv": b"a,b", MODEL: b"w"})
    asset = release_asset(server, payload, provides=(MODEL, "extras/table.csv"))

    fetch_asset(asset, root, quiet=True)

    assert (root / "extras/table.csv").read_bytes() == b"a,b"


def test_existing_file_we_did_not_write_is_kept(server: FileServer, root: Path) -> None:
    (root / MODEL).parent.mkdir(parents=True)
    (root / MODEL).write_bytes(b"the user's own student")
    asset = release_asset(server, make_zip({MODEL: b"released student"}), provides=("data/x.pth",))

    with pytest.raises(UserError) as caught:
        fetch_asset(asset, root, quiet=True)

    assert str(root / MODEL) in str(caught.value) and "did not put there" in str(caught.value)
    assert (root / MODEL).read_bytes() == b"the user's own student"


def test_identical_existing_file_is_kept_and_adopted(server: FileServer, root: Path) -> None:
    (root / MODEL).parent.mkdir(parents=True)
    (root / MODEL).write_bytes(b"same")
    asset = release_asset(server, make_zip({MODEL: b"same", "data/more.pth": b"more"}),
                          provides=(MODEL, "data/more.pth"))

    fetch_asset(asset, root, quiet=True)

    record = json.loads(marker_path(asset, root).read_text())
    assert record["files"] == {MODEL: sha(b"same"), "data/more.pth": sha(b"more")}


def test_refetch_replaces_only_files_it_wrote_unchanged(server: FileServer, root: Path) -> None:
    old = make_zip({MODEL: b"v1", "data/other.pth": b"o1"})
    fetch_asset(release_asset(server, old, sha(old), provides=(MODEL, "data/other.pth")), root, quiet=True)
    (root / MODEL).unlink()  # part of the release is gone, so the next fetch runs again
    new = make_zip({MODEL: b"v2", "data/other.pth": b"o2"})
    asset = release_asset(server, new, sha(new), provides=(MODEL, "data/other.pth"))
    (root / ".cache/downloads/pack.zip").unlink()

    fetch_asset(asset, root, quiet=True)  # data/other.pth was ours and unchanged: replaced

    assert (root / "data/other.pth").read_bytes() == b"o2"
    (root / MODEL).unlink()
    (root / "data/other.pth").write_bytes(b"edited by the user")
    newer = make_zip({MODEL: b"v3", "data/other.pth": b"o3"})
    (root / ".cache/downloads/pack.zip").unlink()
    with pytest.raises(UserError, match="or which changed since"):
        fetch_asset(release_asset(server, newer, sha(newer), provides=(MODEL, "data/other.pth")), root,
                    quiet=True)
    assert (root / "data/other.pth").read_bytes() == b"edited by the user"


def test_unpinned_digest_is_trusted_once_then_enforced(server: FileServer, root: Path) -> None:
    first = make_zip({MODEL: b"v1"})
    console = quiet_console()
    fetch_asset(release_asset(server, first), root, quiet=True, console=console)
    marker = marker_path(release_asset(server, first), root)
    assert "trusted on first use" in said(console) and str(marker) in said(console)  # even quiet
    assert json.loads(marker.read_text())["sha256"] == sha(first)

    (root / MODEL).unlink()
    (root / ".cache/downloads/pack.zip").unlink()
    changed = make_zip({MODEL: b"tampered"})
    with pytest.raises(UserError) as caught:
        fetch_asset(release_asset(server, changed), root, quiet=True)

    message = str(caught.value)
    assert sha(changed) in message and sha(first) in message and str(marker) in message
    assert f'pin sha256 = "{sha(changed)}"' in message
    assert not (root / MODEL).exists() and not (root / ".cache/downloads/pack.zip").exists()
    fetch_asset(release_asset(server, changed, sha(changed)), root, quiet=True)  # pinned: accepted
    assert (root / MODEL).read_bytes() == b"tampered"


# --- 2. short downloads -----------------------------------------------------------------------


@pytest.mark.parametrize("cut", [True, False], ids=["cut-short", "whole"])
def test_unframed_unpinned_plain_file_is_never_marked(server: FileServer, root: Path, cut: bool) -> None:
    payload = b"checkpoint bytes " * 1000
    asset = make_asset(server.publish("s.pth", payload), archive="none", filename="s.pth", dest="checkpoints")
    server.framing, server.drop_after_half = "close", cut
    console = quiet_console()

    with pytest.raises(UserError, match="without a length") as caught:
        fetch_asset(asset, root, console=console)

    assert str(root / ".cache/downloads/s.pth") in str(caught.value)
    assert not is_present(asset, root) and not marker_path(asset, root).exists()
    assert not (root / "checkpoints/s.pth").exists()
    assert "sha256 = " not in said(console)  # no digest of a maybe-truncated file is offered


def test_unframed_download_is_used_when_pinned(server: FileServer, root: Path) -> None:
    payload = b"checkpoint bytes " * 1000
    url = server.publish("s.pth", payload)
    server.framing, server.drop_after_half = "close", True
    cut = make_asset(url, sha(payload), archive="none", filename="s.pth", dest="checkpoints")
    with pytest.raises(UserError, match="sha256 mismatch"):
        fetch_asset(cut, root, quiet=True)

    server.drop_after_half = False
    fetch_asset(cut, root, quiet=True)
    assert (root / "checkpoints/s.pth").read_bytes() == payload


def test_unframed_zip_is_checked_by_its_own_structure(server: FileServer, root: Path) -> None:
    payload = make_zip({"data/blob.bin": b"z" * 50_000})
    asset = make_asset(server.publish("pack.zip", payload), dest=".")
    server.framing, server.drop_after_half = "close", True
    with pytest.raises(UserError, match="not a readable zip"):
        fetch_asset(asset, root, quiet=True)
    assert not marker_path(asset, root).exists()

    server.drop_after_half = False
    fetch_asset(asset, root, quiet=True)
    assert (root / "data/blob.bin").stat().st_size == 50_000


def test_chunked_download_cut_short_is_resumed_not_marked(server: FileServer, root: Path) -> None:
    payload = b"chunked checkpoint " * 2000
    asset = make_asset(server.publish("s.pth", payload), archive="none", filename="s.pth", dest="checkpoints")
    server.framing, server.drop_after_half = "chunked", True

    with pytest.raises(UserError, match="could not download .* closed before the end"):
        fetch_asset(asset, root, quiet=True)

    assert not marker_path(asset, root).exists() and not (root / "checkpoints/s.pth").exists()
    assert (root / ".cache/downloads/s.pth.partial").stat().st_size < len(payload)
    server.drop_after_half = False
    fetch_asset(asset, root, quiet=True)  # a clean chunked end vouches for an unpinned file
    assert (root / "checkpoints/s.pth").read_bytes() == payload


# --- 3. name clashes are named -----------------------------------------------------------------


def test_file_where_archive_needs_a_folder(server: FileServer, root: Path) -> None:
    (root / "best_models").write_text("a file called best_models")
    asset = release_asset(server, make_zip({MODEL: b"w"}))

    with pytest.raises(UserError) as caught:
        fetch_asset(asset, root, quiet=True)

    message = str(caught.value)
    assert repr(MODEL) in message and str(root / "best_models") in message
    assert "disk space" not in message
    assert (root / "best_models").read_text() == "a file called best_models"


def test_file_where_dest_needs_a_folder(server: FileServer, root: Path) -> None:
    (root / "data").write_text("a file called data")
    asset = make_asset(server.publish("pack.zip", make_zip({"a.pth": b"w"})))  # dest data/pack

    with pytest.raises(UserError) as caught:
        fetch_asset(asset, root, quiet=True)

    assert "'a.pth'" in str(caught.value) and f"the file {root / 'data'} is" in str(caught.value)
    assert (root / "data").read_text() == "a file called data"


def test_folder_where_archive_has_a_file(server: FileServer, root: Path) -> None:
    (root / MODEL).mkdir(parents=True)
    asset = release_asset(server, make_zip({MODEL: b"w"}), provides=(MODEL, "data/x.pth"))

    with pytest.raises(UserError) as caught:
        fetch_asset(asset, root, quiet=True)

    assert "is a folder" in str(caught.value) and str(root / MODEL) in str(caught.value)
    assert "disk space" not in str(caught.value)


def test_clash_inside_the_archive(server: FileServer, root: Path) -> None:
    payload = make_zip({"data/a": b"file", "data/a/b.pth": b"inside"})
    asset = make_asset(server.publish("pack.zip", payload), dest=".")

    with pytest.raises(UserError) as caught:
        fetch_asset(asset, root, quiet=True)

    assert "'data/a'" in str(caught.value) and "'data/a/b.pth'" in str(caught.value)
    assert "disk space" not in str(caught.value)
    assert files_under(root / "data") == []


# --- 4. the manifest ships with the package; its paths stay in the home ------------------------


def test_default_manifest_is_package_data() -> None:
    assert DEFAULT_MANIFEST == Path(manifest_module.__file__).with_name("release_manifest.toml")
    assert DEFAULT_MANIFEST.is_file() and not (REPO / "checkpoints/manifest.toml").exists()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["amalgam"]
    assert any(DEFAULT_MANIFEST.relative_to(REPO / "amalgam").match(p) for p in patterns)


@pytest.mark.e2e
def test_fetch_front_end_uses_shipped_manifest_outside_the_checkout(tmp_path: Path) -> None:
    """As after a non-editable `pip install .`: only the package's own files, no checkout."""
    site = tmp_path / "site"
    shutil.copytree(REPO / "amalgam", site / "amalgam", ignore=shutil.ignore_patterns("__pycache__"))
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONWARNINGS": "ignore"}
    env.pop("AMALGAM_HOME", None)
    launch = "from amalgam.cli.eval_cli import main; main()"

    result = subprocess.run([sys.executable, "-c", launch, "fetch", "no-such-asset"], cwd=home, env=env,
                            capture_output=True, text=True, timeout=300)

    assert_one_line_error(result, "'no-such-asset'", "cas771-models, cas771-data")


@pytest.mark.parametrize(
    ("key", "table"),
    [("dest", {"dest": '"data/pack"'}),
     ("provides", {"dest": '"checkpoints"', "provides": '["data/pack/x.pth"]'})],
)
def test_symlink_out_of_the_home_is_refused(tmp_path: Path, root: Path, key: str, table: dict) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "data").symlink_to(outside)
    manifest = write_manifest(tmp_path / "m.toml", {**{
        "name": '"pack"', "url": '"https://example.invalid/p.zip"', "sha256": '""', "archive": '"zip"'
    }, **table})
    (asset,) = load_manifest(manifest)

    with pytest.raises(UserError) as caught:
        fetch_asset(asset, root, quiet=True)

    message = str(caught.value)
    assert "pack" in message and f"'{key}'" in message and "outside" in message and "\n" not in message
    assert list(outside.iterdir()) == []


def test_released_student_behind_symlink_is_refused(tmp_path: Path, root: Path) -> None:
    outside = tmp_path / "elsewhere"
    (outside / "TaskA").mkdir(parents=True)
    (outside / "TaskA/student_model_epoch57_acc81.27.pth").write_bytes(b"w")
    (root / "best_models").symlink_to(outside)

    with pytest.raises(UserError, match="'students'"):
        released_student("A", None, root)


@pytest.mark.parametrize("path", ['"train.py"', '"amalgam/.git/config"'])
def test_manifest_paths_may_not_name_source(tmp_path: Path, path: str) -> None:
    manifest = write_manifest(tmp_path / "m.toml", {
        "name": '"pack"', "url": '"https://example.invalid/p.zip"', "sha256": '""', "archive": '"zip"',
        "dest": '"."', "provides": f"[{path}]",
    })
    with pytest.raises(UserError, match="'provides'"):
        load_manifest(manifest)

