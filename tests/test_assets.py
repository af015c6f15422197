"""Asset fetching against a local HTTP server: no test here may touch the internet."""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import sys
import types
import zipfile
from pathlib import Path

import pytest

from amalgam.errors import UserError
from amalgam.harness.assets import (
    DEFAULT_MANIFEST,
    fetch,
    fetch_asset,
    is_present,
    load_manifest,
    marker_path,
    released_student,
)
from tests.helpers.file_server import (
    GOOD_TABLE,
    FileServer,
    files_under,
    make_asset,
    make_zip,
    quiet_console,
    said,
    sha,
    write_manifest,
)

# The file server (`server`) and the zip/asset/manifest builders: tests/helpers/file_server.py


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    return path


# --- helpers ---------------------------------------------------------------------------------


NESTED = {
    "pkg/": b"",
    "pkg/top.txt": b"top level",
    "pkg/a/b/weights.pth": b"\x00\x01weights" * 100,
    "pkg/a/notes.md": b"# notes",
    "pkg/.DS_Store": b"finder junk",
    "__MACOSX/pkg/._top.txt": b"resource fork",
}


# --- happy path ------------------------------------------------------------------------------


def test_fetch_verifies_and_unpacks_nested_zip(server: FileServer, root: Path) -> None:
    payload = make_zip(NESTED)
    asset = make_asset(server.publish("pack.zip", payload), sha(payload))
    console = quiet_console()

    dest = fetch_asset(asset, root, console=console)

    assert dest == root / "data/pack"
    assert (dest / "pkg/top.txt").read_bytes() == b"top level"
    assert (dest / "pkg/a/b/weights.pth").read_bytes() == NESTED["pkg/a/b/weights.pth"]
    assert (dest / "pkg/a/notes.md").read_bytes() == b"# notes"
    assert not (dest / "__MACOSX").exists()
    assert not (dest / "pkg/.DS_Store").exists()
    assert not [p for p in dest.iterdir() if p.name.startswith(".amalgam-unpack-")]
    record = json.loads(marker_path(asset, root).read_text())
    assert record["sha256"] == sha(payload) and record["url"] == asset.url
    assert is_present(asset, root)
    cache = root / ".cache/downloads"
    assert (cache / "pack.zip").read_bytes() == payload
    assert not (cache / "pack.zip.partial").exists()
    assert "ready" in said(console)


def test_second_fetch_does_nothing(server: FileServer, root: Path) -> None:
    payload = make_zip(NESTED)
    asset = make_asset(server.publish("pack.zip", payload), sha(payload))
    fetch_asset(asset, root, quiet=True)
    hits = len(server.requests)
    console = quiet_console()

    fetch_asset(asset, root, console=console)

    assert hits == 1 and len(server.requests) == hits
    assert "already present" in said(console)


def test_provides_on_disk_skip_the_download(server: FileServer, root: Path) -> None:
    asset = make_asset(server.publish("pack.zip", b"unused"), provides=("data/pack/model.pth",))
    assert not is_present(asset, root)
    (root / "data/pack").mkdir(parents=True)
    (root / "data/pack/model.pth").write_bytes(b"unpacked by hand")

    assert fetch_asset(asset, root, quiet=True) == root / "data/pack"
    assert server.requests == []


def test_plain_file_is_copied_and_marked(server: FileServer, root: Path) -> None:
    payload = b"a single checkpoint"
    url = server.publish("student.pth", payload)
    asset = make_asset(url, sha(payload), archive="none", filename="student.pth", dest="checkpoints")

    fetch_asset(asset, root, quiet=True)

    assert (root / "checkpoints/student.pth").read_bytes() == payload
    assert is_present(asset, root)  # no provides: the marker decides
    repinned = make_asset(url, "0" * 64, archive="none", filename="student.pth", dest="checkpoints")
    assert not is_present(repinned, root)  # a marker for another digest does not count


def test_unpinned_sha_prints_digest(server: FileServer, root: Path) -> None:
    payload = make_zip({"x.txt": b"x"})
    console = quiet_console()

    fetch_asset(make_asset(server.publish("pack.zip", payload)), root, console=console)

    output = said(console)
    assert sha(payload) in output
    assert f'sha256 = "{sha(payload)}"' in output


# --- verification and damaged downloads -----------------------------------------------------


def test_sha_mismatch_deletes_download(server: FileServer, root: Path) -> None:
    payload = make_zip(NESTED)
    wrong = "0" * 64
    asset = make_asset(server.publish("pack.zip", payload), wrong)

    with pytest.raises(UserError) as caught:
        fetch_asset(asset, root, quiet=True)

    message = str(caught.value)
    assert wrong in message and sha(payload) in message and "deleted" in message
    assert files_under(root / ".cache/downloads") == []
    assert not (root / "data/pack").exists()


def _damage_second_member() -> bytes:
    payload = make_zip({"first.txt": b"FIRST-CONTENT", "second.txt": b"SECOND-CONTENT"})
    return payload.replace(b"SECOND-CONTENT", b"XXXXXX-CONTENT")


@pytest.mark.parametrize(
    "payload",
    [b"this is not a zip archive" * 40, _damage_second_member()],
    ids=["not-a-zip", "bad-crc"],
)
def test_corrupt_zip_is_deleted_and_reported(server: FileServer, root: Path, payload: bytes) -> None:
    asset = make_asset(server.publish("pack.zip", payload))

    with pytest.raises(UserError, match="not a readable zip") as caught:
        fetch_asset(asset, root, quiet=True)

    assert "deleted" in str(caught.value)
    assert not (root / ".cache/downloads/pack.zip").exists()
    assert files_under(root / "data/pack") == []  # the good first member was not left behind
    assert not marker_path(asset, root).exists()


def _symlink_entry() -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo("link")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, b"../../outside"


@pytest.mark.parametrize(
    ("entries", "extra", "reason"),
    [
        ({"../evil.txt": b"evil"}, [], "'..'"),
        ({"/tmp/amalgam-test-abs/evil.txt": b"evil"}, [], "absolute"),
        ({"C:/evil.txt": b"evil"}, [], "drive letter"),
        ({}, [_symlink_entry()], "symbolic link"),
    ],
    ids=["dotdot", "absolute", "drive", "symlink"],
)
def test_unsafe_zip_is_refused(
    server: FileServer,
    root: Path,
    entries: dict[str, bytes],
    extra: list[tuple[zipfile.ZipInfo, bytes]],
    reason: str,
) -> None:
    payload = make_zip({"good.txt": b"fine", **entries}, extra)
    assert len(zipfile.ZipFile(io.BytesIO(payload)).namelist()) == 2  # the hostile name survived
    asset = make_asset(server.publish("pack.zip", payload))

    with pytest.raises(UserError, match="refusing to unpack") as caught:
        fetch_asset(asset, root, quiet=True)

    assert reason in str(caught.value)
    assert files_under(root / "data/pack") == []
    assert not (root / "evil.txt").exists() and not (root.parent / "evil.txt").exists()
    assert not Path("/tmp/amalgam-test-abs/evil.txt").exists()
    assert not (root / "data/pack/link").is_symlink()
    assert not marker_path(asset, root).exists()


# --- network trouble -------------------------------------------------------------------------


def test_interrupted_download_resumes(server: FileServer, root: Path) -> None:
    payload = make_zip({"big/blob.bin": os.urandom(200_000)})
    asset = make_asset(server.publish("pack.zip", payload), sha(payload))
    partial = root / ".cache/downloads/pack.zip.partial"
    server.drop_after_half = True

    with pytest.raises(UserError, match="could not download") as caught:
        fetch_asset(asset, root, quiet=True)

    assert asset.url in str(caught.value)
    kept = partial.stat().st_size
    assert 0 < kept < len(payload)
    assert not (root / ".cache/downloads/pack.zip").exists()

    server.drop_after_half = False
    fetch_asset(asset, root, quiet=True)

    assert server.requests[-1] == ("/pack.zip", f"bytes={kept}-")
    assert not partial.exists()
    assert sha((root / ".cache/downloads/pack.zip").read_bytes()) == sha(payload)
    assert (root / "data/pack/big/blob.bin").stat().st_size == 200_000


@pytest.mark.parametrize(
    ("stale", "honour_range"),
    [(b"stale bytes", False), (b"x" * 100_000, True)],
    ids=["server-answers-200", "range-not-satisfiable"],
)
def test_unusable_partial_restarts_from_zero(
    server: FileServer, root: Path, stale: bytes, honour_range: bool
) -> None:
    payload = make_zip({"a.txt": b"a" * 1000})
    asset = make_asset(server.publish("pack.zip", payload), sha(payload))
    cache = root / ".cache/downloads"
    cache.mkdir(parents=True)
    (cache / "pack.zip.partial").write_bytes(stale)
    server.honour_range = honour_range

    fetch_asset(asset, root, quiet=True)  # would raise on a sha mismatch

    assert server.requests[0][1] == f"bytes={len(stale)}-"
    assert (root / "data/pack/a.txt").read_bytes() == b"a" * 1000


def test_offline_failure_names_url_and_manual_fix(root: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/pack.zip"

    with pytest.raises(UserError) as caught:
        fetch_asset(make_asset(url), root, quiet=True)

    message = str(caught.value)
    assert url in message
    assert str(root / ".cache/downloads/pack.zip") in message
    assert "by hand" in message and "\n" not in message


def test_gdrive_assets_go_through_gdown(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    payload = make_zip({"best_models/TaskA/student.pth": b"student"})
    calls: list[dict[str, object]] = []

    def download(*, id: str, output: str, quiet: bool, resume: bool) -> str:
        calls.append({"id": id, "output": output, "resume": resume})
        Path(output).write_bytes(payload)
        return output

    monkeypatch.setitem(sys.modules, "gdown", types.SimpleNamespace(download=download))
    asset = make_asset("gdrive:FILE_id-1", sha(payload), dest=".")

    fetch_asset(asset, root, quiet=True)

    assert calls == [
        {"id": "FILE_id-1", "output": str(root / ".cache/downloads/pack.zip.partial"), "resume": True}
    ]
    assert (root / "best_models/TaskA/student.pth").read_bytes() == b"student"


def test_gdown_failure_becomes_user_error(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    def download(**kwargs: object) -> str:
        raise RuntimeError("Cannot retrieve the public link of the file.\nYou may need to ...")

    monkeypatch.setitem(sys.modules, "gdown", types.SimpleNamespace(download=download))

    with pytest.raises(UserError) as caught:
        fetch_asset(make_asset("gdrive:abc123"), root, quiet=True)

    message = str(caught.value)
    assert "https://drive.google.com/uc?id=abc123" in message
    assert "Cannot retrieve the public link" in message and "\n" not in message


# --- the manifest ----------------------------------------------------------------------------


def test_real_manifest_lists_cas771_assets(root: Path) -> None:
    assets = {asset.name: asset for asset in load_manifest()}

    assert DEFAULT_MANIFEST.is_file()
    assert set(assets) == {"cas771-models", "cas771-data"}
    models, data = assets["cas771-models"], assets["cas771-data"]
    assert models.url == "gdrive:1H9VcBqfV3JmZFygA7erUPydAU5XAxSh-"
    assert data.url == "gdrive:12KVxl9n577vwoZ1WPn6U70jD37_UA0y-"
    assert models.archive == data.archive == "zip" and models.dest == data.dest == "."
    assert "data/TaskB/train_dataB_model_1.pth" in data.provides
    assert models.tasks == data.tasks == ("A", "B")
    student_a = "best_models/TaskA/student_model_epoch57_acc81.27.pth"
    assert models.students == {
        "A": student_a,
        "B": "best_models/TaskB/student_model_epoch12_acc80.00.pth",
    }

    assert released_student("A", None, root) is None
    (root / student_a).parent.mkdir(parents=True)
    (root / student_a).write_bytes(b"weights")
    assert released_student("A", None, root) == root / student_a
    assert released_student("C", None, root) is None


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"url": None}, "url"),
        ({"sha256": None}, "sha256"),
        ({"archive": '"tar"'}, "archive"),
        ({"dest": '"../outside"'}, "dest"),
        ({"sha256": '"abc"'}, "sha256"),
        ({"provides": '["/etc/passwd"]'}, "provides"),
        ({"checksum": '"x"'}, "checksum"),
    ],
    ids=["missing-url", "missing-sha", "bad-archive", "dest-escapes", "short-sha", "abs", "typo"],
)
def test_bad_manifest_names_file_and_key(tmp_path: Path, change: dict[str, str | None], key: str) -> None:
    table = {k: v for k, v in {**GOOD_TABLE, **change}.items() if v is not None}
    path = write_manifest(tmp_path / "broken.toml", table)

    with pytest.raises(UserError) as caught:
        load_manifest(path)

    assert "broken.toml" in str(caught.value) and f"'{key}'" in str(caught.value)


def test_unreadable_manifest_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[[asset]\nname = ")
    with pytest.raises(UserError, match="not valid TOML"):
        load_manifest(tmp_path / "bad.toml")
    with pytest.raises(UserError, match="not found"):
        load_manifest(tmp_path / "missing.toml")


def test_fetch_by_name(server: FileServer, root: Path, tmp_path: Path) -> None:
    url_a = server.publish("a.zip", make_zip({"a.txt": b"a"}))
    url_b = server.publish("b.zip", make_zip({"b.txt": b"b"}))
    manifest = write_manifest(
        tmp_path / "manifest.toml",
        {**GOOD_TABLE, "name": '"alpha"', "url": f'"{url_a}"', "dest": '"data/A"'},
        {**GOOD_TABLE, "name": '"beta"', "url": f'"{url_b}"', "dest": '"data/B"'},
    )

    with pytest.raises(UserError) as caught:
        fetch(["gamma"], manifest, root, quiet=True)
    assert "'gamma'" in str(caught.value) and "alpha, beta" in str(caught.value)
    assert server.requests == []

    assert fetch(["beta"], manifest, root, quiet=True) == [root / "data/B"]
    assert (root / "data/B/b.txt").read_bytes() == b"b" and not (root / "data/A").exists()
    assert fetch(None, manifest, root, quiet=True) == [root / "data/A", root / "data/B"]
    assert (root / "data/A/a.txt").read_bytes() == b"a"
