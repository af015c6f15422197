"""Archives are limited in what they unpack to (a zip bomb is refused before a byte is written),
a refused download is not kept for the next fetch, and trust on first use is only announced
for a download that was really unpacked and recorded.

Everything is served from the 127.0.0.1 server fixture; nothing here touches the internet.
"""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from amalgam.errors import UserError
from amalgam.harness import unpack
from amalgam.harness.assets import fetch_asset, load_manifest, marker_path
from amalgam.harness.unpack import ArchiveLimits, Placement, UnsafeArchive, unpack_zip
from tests.helpers.file_server import (
    FileServer,
    files_under,
    make_asset,
    make_zip,
    quiet_console,
    said,
    write_manifest,
)

MiB = 2**20


def deflated_zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """~64 KiB that inflate to 64 MiB (a ratio of about 1000, like the reported 200 KiB → 200 MiB)."""
    return deflated_zip({"data/pack/zeros.bin": bytes(64 * MiB)})


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    return path


def downloads(root: Path) -> list[str]:
    return files_under(root / ".cache" / "downloads")


def test_a_zip_bomb_is_refused_before_anything_is_written(server: FileServer, root: Path, bomb: bytes):
    assert len(bomb) < MiB // 4
    asset = make_asset(server.publish("pack.zip", bomb), dest=".")
    console = quiet_console()
    with pytest.raises(UserError) as caught:
        fetch_asset(asset, root, console=console)
    message = str(caught.value)
    assert "inflates" in message and "max_ratio" in message and "\n" not in message, message
    assert not (root / "data").exists()
    assert downloads(root) == []  # refused: not kept for the next fetch to reuse
    assert "was deleted" in message
    assert "trusted on first use" not in said(console)  # no digest to pin for a refused archive
    assert not marker_path(asset, root).exists()


def test_a_manifest_entry_may_raise_the_ratio(server: FileServer, root: Path, bomb: bytes):
    asset = make_asset(server.publish("pack.zip", bomb), dest=".", limits=ArchiveLimits(max_ratio=5000))
    fetch_asset(asset, root, quiet=True, console=quiet_console())
    assert (root / "data" / "pack" / "zeros.bin").stat().st_size == 64 * MiB


def test_the_declared_total_is_limited_and_the_manifest_may_raise_it(server: FileServer, root: Path):
    payload = make_zip({"a.bin": os.urandom(MiB), "b.bin": os.urandom(MiB)})  # stored: ratio 1
    small = make_asset(server.publish("pack.zip", payload), limits=ArchiveLimits(max_bytes=MiB))
    with pytest.raises(UserError) as caught:
        fetch_asset(small, root, console=quiet_console())
    assert "2.0 MiB in all, over the 1.0 MiB limit" in str(caught.value)
    assert "max_unpacked_mib" in str(caught.value)
    assert files_under(root / "data") == []
    raised = make_asset(server.publish("pack.zip", payload), limits=ArchiveLimits(max_bytes=4 * MiB))
    fetch_asset(raised, root, console=quiet_console())
    assert {"a.bin", "b.bin"} <= set(files_under(root / "data" / "pack"))


def test_manifest_limits_are_read_and_checked(tmp_path: Path):
    table = {"name": '"pack"', "url": '"https://example.invalid/p.zip"', "sha256": '""',
             "archive": '"zip"', "dest": '"out"'}
    path = write_manifest(tmp_path / "m.toml", {**table, "max_unpacked_mib": "2", "max_ratio": "250.5"})
    (asset,) = load_manifest(path)
    assert asset.limits == ArchiveLimits(max_bytes=2 * MiB, max_ratio=250.5)
    (default,) = load_manifest(write_manifest(tmp_path / "d.toml", table))
    assert default.limits == ArchiveLimits()
    for key, bad in (("max_ratio", "0"), ("max_ratio", "inf"), ("max_unpacked_mib", '"big"'),
                     ("max_unpacked_mib", "-1"), ("max_ratio", "true")):
        with pytest.raises(UserError, match=f"key '{key}' must be a number above 0"):
            load_manifest(write_manifest(tmp_path / "bad.toml", {**table, key: bad}))


def test_no_room_on_the_disk_is_said_before_extracting(root: Path, monkeypatch: pytest.MonkeyPatch):
    archive = root / "pack.zip"
    archive.write_bytes(make_zip({"a.bin": os.urandom(MiB)}))
    real = shutil.disk_usage
    monkeypatch.setattr(unpack.shutil, "disk_usage",
                        lambda p: real(p)._replace(free=MiB // 2))  # half of what the zip needs
    placement = Placement("pack", root, root / "data" / "pack", frozenset({"data"}))
    with pytest.raises(UserError) as caught:
        unpack_zip(archive, placement)
    assert not isinstance(caught.value, UnsafeArchive)  # the archive is fine: keep the download
    assert "needs 1.0 MiB but the disk has 512.0 KiB free" in str(caught.value)
    assert files_under(root / "data") == []


def test_a_member_may_not_yield_more_than_it_declares(tmp_path: Path):
    with pytest.raises(UnsafeArchive, match="more than the 10 bytes it declares"):
        unpack._copy_hashing(io.BytesIO(bytes(11)), tmp_path / "out", declared=10)


def test_an_unsafe_archive_is_not_kept_for_the_next_fetch(server: FileServer, root: Path):
    asset = make_asset(server.publish("pack.zip", make_zip({"../escape.bin": b"x"})))
    console = quiet_console()
    with pytest.raises(UserError, match="was deleted"):
        fetch_asset(asset, root, console=console)
    assert downloads(root) == []
    assert "recorded" not in said(console)


def test_a_user_file_in_the_way_keeps_the_download(server: FileServer, root: Path):
    """The archive is fine, the place is not: the download stays, to be used once the file moves."""
    (root / "data" / "pack").mkdir(parents=True)
    (root / "data" / "pack" / "a.bin").write_bytes(b"the user's own")
    asset = make_asset(server.publish("pack.zip", make_zip({"a.bin": b"the asset's"})))
    with pytest.raises(UserError, match="did not put there"):
        fetch_asset(asset, root, console=quiet_console())
    assert downloads(root) == ["pack.zip"]


def test_a_truncated_download_without_a_length_prints_no_digest_to_pin(server: FileServer, root: Path):
    """Sent without Content-Length and cut off: the zip check refuses it, and no "add sha256 =
    <digest>" of the broken file comes before (or after) the refusal."""
    server.framing = "close"
    server.drop_after_half = True
    asset = make_asset(server.publish("pack.zip", make_zip({"a.bin": os.urandom(4096)})))
    console = quiet_console()
    with pytest.raises(UserError, match="not a readable zip archive"):
        fetch_asset(asset, root, console=console)
    assert "sha256" not in said(console) and "recorded" not in said(console)
    assert not marker_path(asset, root).exists()


def test_trust_on_first_use_is_announced_after_a_good_unpack(server: FileServer, root: Path):
    asset = make_asset(server.publish("pack.zip", make_zip({"a.bin": b"weights"})))
    console = quiet_console()
    fetch_asset(asset, root, console=console, quiet=True)
    assert "trusted on first use" in said(console) and marker_path(asset, root).is_file()
