"""Getting release assets onto disk.

The CAS771 archives are large and come from Google Drive over connections that drop, so
partial downloads are kept and resumed, nothing is unpacked before its checksum is checked,
and every failure ends in one message telling the user how to finish the job by hand.

What a cut-off download looks like, and so what can be detected:
- Content-Length (or a 206's Content-Range total) present: fewer bytes than announced is a
  short read; http.client returns it silently, so it is counted here. The .partial stays
  and the next run resumes it.
- chunked transfer: a connection that drops before the final zero-size chunk raises
  http.client.IncompleteRead; the same rule applies.
- neither (the body ends when the server closes): a cut-off transfer looks exactly like a
  complete one. Such a download is only used when something else vouches for it: a pinned
  sha256, or the zip format itself (a truncated zip has no end-of-archive record and every
  member carries a CRC). An unpinned plain file (archive = "none") sent this way is refused
  and never marked fetched.
- Google Drive goes through gdown, which cannot tell us the framing; it relies on
  requests/urllib3, which raise on a short Content-Length body or a broken chunked stream.

An unpinned sha256 is trusted on first use: the digest is recorded beside the files (see
manifest.marker_path) and a later download with another digest is refused until the user
pins it in the manifest or deletes the record.
"""

from __future__ import annotations

import http.client
import inspect
import os
import re
import zipfile
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from amalgam.errors import UserError
from amalgam.harness.manifest import (
    Asset,
    allowed_folders,
    home_path,
    is_present,
    load_manifest,
    marker_path,
    read_record,
    recorded_files,
    write_record,
)
from amalgam.harness.unpack import Placement, UnsafeArchive, place_file, sha256_file, unpack_zip
from amalgam.writable import check_writable, describe_write_failure, existing_ancestor

TIMEOUT_S = 30.0
_CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)")


def _say(console: Console, quiet: bool, message: str) -> None:
    if not quiet:
        console.print(message, markup=False, highlight=False, soft_wrap=True)


def source_url(url: str) -> str:
    """A link a person can open in a browser, for messages that ask them to download by hand."""
    if url.startswith("gdrive:"):
        return "https://drive.google.com/uc?id=" + url.removeprefix("gdrive:")
    return url


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) from a Content-Range header; None where absent or unknown."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if match is None:
        return None, None
    start = int(match[1]) if match[1] is not None else None
    total = int(match[2]) if match[2] != "*" else None
    return start, total


def _stream(response: Any, partial: Path, offset: int, progress: Progress, label: str) -> bool:
    """Append the body to partial; True when its framing proved it complete (see the module doc)."""
    length = response.headers.get("Content-Length")
    expected = int(length) if length and length.isdigit() else None
    if expected is None and offset:
        _, whole = _content_range(response.headers.get("Content-Range"))
        expected = whole - offset if whole is not None else None
    total = offset + expected if expected is not None else None
    task = progress.add_task(label, total=total, completed=offset)
    received = 0
    # Appending only when resuming; a 200 answer means the server is sending everything again.
    with partial.open("ab" if offset else "wb") as out:
        while chunk := response.read(_CHUNK):
            out.write(chunk)
            received += len(chunk)
            progress.advance(task, len(chunk))
    if expected is not None and received < expected:
        # http.client returns a short body silently; without this the file would look complete.
        raise ConnectionError(f"connection closed after {offset + received} of {total} bytes")
    # IncompleteRead above would have signalled a chunked stream cut before its last chunk.
    return expected is not None or bool(getattr(response, "chunked", False))


def _download_http(url: str, partial: Path, progress: Progress, label: str) -> bool:
    """Download into partial, continuing from its current size when the server allows it.

    Returns whether the transfer's framing proved the file complete.
    """
    for _attempt in range(2):  # the second pass only follows discarding an unusable partial
        offset = partial.stat().st_size if partial.exists() else 0
        headers = {"User-Agent": "amalgam-fetch"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            response = urlopen(Request(url, headers=headers), timeout=TIMEOUT_S)
        except HTTPError as err:
            if err.code != 416 or not offset:
                raise
            _, total = _content_range(err.headers.get("Content-Range"))
            err.close()
            if total == offset:
                return True  # an earlier run already received every byte
            partial.unlink()
            continue
        with response:
            if offset and response.status == 206:
                start, _ = _content_range(response.headers.get("Content-Range"))
                if start != offset:
                    partial.unlink()
                    continue
            else:
                offset = 0
            return _stream(response, partial, offset, progress, label)
    raise ConnectionError("the server kept refusing to resume the download")


def _download_gdrive(file_id: str, partial: Path, quiet: bool) -> None:
    import gdown  # lazily: it drags in requests and bs4, and only Drive assets need it

    kwargs: dict[str, Any] = {"id": file_id, "output": str(partial), "quiet": quiet, "resume": True}
    if "timeout" in inspect.signature(gdown.download).parameters:  # older gdown lacks it
        kwargs["timeout"] = TIMEOUT_S
    try:
        result = gdown.download(**kwargs)
    except OSError:
        raise
    except Exception as err:  # gdown's own error types differ between versions
        raise ConnectionError(f"{type(err).__name__}: {err}") from err
    if result is None or not partial.is_file():
        raise ConnectionError("Google Drive did not send the file; is it still shared publicly?")


def _reason(err: BaseException) -> str:
    if isinstance(err, HTTPError):
        text = f"HTTP {err.code} {err.reason}"
    elif isinstance(err, URLError):
        text = str(err.reason)
    elif isinstance(err, http.client.IncompleteRead):
        text = "the connection closed before the end of the download"
    elif isinstance(err, TimeoutError):
        text = f"no answer within {TIMEOUT_S:.0f} s"
    else:
        text = str(err) or type(err).__name__
    text = " ".join(text.split())  # gdown's messages span several lines; the CLI wants one
    return text if len(text) <= 300 else text[:297] + "..."


def _download(asset: Asset, download: Path, dest: Path, quiet: bool, console: Console) -> None:
    partial = download.with_name(download.name + ".partial")
    try:
        if asset.url.startswith("gdrive:"):
            _download_gdrive(asset.url.removeprefix("gdrive:"), partial, quiet)
            framed = True  # gdown (requests/urllib3) raises on short or broken bodies
        else:
            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
            )
            with Progress(*columns, console=console, disable=quiet, transient=True) as progress:
                framed = _download_http(asset.url, partial, progress, asset.name)
    except (OSError, http.client.HTTPException) as err:
        # The .partial stays where it is, so the next run resumes instead of starting over.
        unwritable = describe_write_failure(err) if isinstance(err, OSError) else None
        if unwritable is not None:  # the disk, not the network: downloading by hand would not help
            raise UserError(f"could not download {asset.name}: {unwritable}") from err
        raise UserError(
            f"could not download {asset.name} from {source_url(asset.url)} ({_reason(err)}); "
            f"download it by hand and put it at {download} (or unpack it into {dest}), "
            "then run again"
        ) from err
    if not framed and not asset.sha256 and asset.archive == "none":
        raise UserError(
            f"{asset.name}: {source_url(asset.url)} was sent without a length (no Content-Length, "
            f"not chunked), so a cut-off download cannot be told from a whole one and {partial} was "
            "not used; pin its sha256 in the manifest, or download it by hand and put it at "
            f"{download}, then run again"
        )
    os.replace(partial, download)


def _verify(asset: Asset, download: Path) -> str:
    digest = sha256_file(download)
    if asset.sha256 and digest != asset.sha256:
        download.unlink(missing_ok=True)
        raise UserError(
            f"sha256 mismatch for {asset.name}: expected {asset.sha256}, got {digest}; "
            f"the download {download} was deleted - run again to re-download, or update "
            "sha256 in the manifest if the release really changed"
        )
    return digest


def _check_recorded_digest(asset: Asset, digest: str, download: Path, root: Path) -> bool:
    """Unpinned: refuse a digest other than the one recorded at the first fetch; True when this
    is the first fetch (nothing recorded), so that the digest is being trusted on first use."""
    if asset.sha256:
        return False
    recorded = read_record(asset, root).get("sha256")
    if isinstance(recorded, str) and recorded:
        if recorded != digest:
            download.unlink(missing_ok=True)
            raise UserError(
                f"{asset.name}: the download's sha256 {digest} differs from {recorded}, recorded when "
                f"it was first fetched; nothing was unpacked and the download was deleted - if the "
                f"release really changed, pin sha256 = \"{digest}\" in the manifest or delete "
                f"{marker_path(asset, root)}"
            )
        return False
    return True


def _warn_trusted(asset: Asset, digest: str, root: Path, console: Console) -> None:
    """Said once the files are unpacked and the digest recorded, never for a download that was
    then refused (a truncated or unsafe archive must not be the digest a user pins)."""
    marker = marker_path(asset, root)
    # Printed even with --quiet: the user is trusting whatever the server sent this time.
    console.print(
        f"warning: {asset.name}: sha256 is not pinned in the manifest, so this download is trusted "
        f"on first use (sha256 {digest}, recorded in {marker}; a later download with another digest "
        f'will be refused); add sha256 = "{digest}" to its [[asset]] table to verify it',
        markup=False, highlight=False, soft_wrap=True,
    )


def _place(asset: Asset, download: Path, placement: Placement) -> dict[str, str]:
    if asset.archive != "zip":
        return place_file(download, placement, asset.filename)
    try:
        return unpack_zip(download, placement, asset.limits)
    except UnsafeArchive as err:  # kept, the next fetch would only refuse it again
        download.unlink(missing_ok=True)
        raise UserError(f"{err}; the download {download} was deleted") from err
    except zipfile.BadZipFile as err:
        download.unlink(missing_ok=True)
        raise UserError(
            f"{asset.name}: {download} is not a readable zip archive ({err}); it was "
            "deleted - run again to download it afresh"
        ) from err


def fetch_asset(
    asset: Asset,
    root: Path,
    *,
    cache_dir: Path | None = None,
    quiet: bool = False,
    console: Console | None = None,
) -> Path:
    """Make one asset present under root, downloading only what is missing; returns its dest."""
    console = console if console is not None else Console(stderr=True)
    root = Path(root)
    dest = home_path(asset, "dest", asset.dest, root)
    if is_present(asset, root):
        _say(console, quiet, f"{asset.name}: already present in {dest}, nothing to do")
        return dest
    cache = Path(cache_dir) if cache_dir is not None else root / ".cache" / "downloads"
    check_writable(cache, f"the download of {asset.name}")  # before any byte is downloaded
    if existing_ancestor(dest).is_dir():  # a file in the way: unpacking names the member it blocks
        check_writable(dest, asset.name)
    cache.mkdir(parents=True, exist_ok=True)
    download = cache / asset.filename
    if download.is_file():
        _say(console, quiet, f"{asset.name}: using the earlier download {download}")
    else:
        _download(asset, download, dest, quiet, console)
    digest = _verify(asset, download)
    first_use = _check_recorded_digest(asset, digest, download, root)
    owned = recorded_files(read_record(asset, root))
    placement = Placement(asset.name, root, dest, allowed_folders(asset), owned)
    files = _place(asset, download, placement)
    write_record(asset, root, digest, files)
    if first_use:
        _warn_trusted(asset, digest, root, console)
    _say(console, quiet, f"{asset.name}: ready in {dest}")
    return dest


def fetch(names: list[str] | None, manifest: Path | None, root: Path, quiet: bool = False) -> list[Path]:
    """Fetch the named assets (all of them when names is empty), in manifest order.

    An asset that fails does not stop the rest (the data archive is still worth having when
    the models archive cannot be had); the failures end in one error once all were tried."""
    assets = load_manifest(manifest)
    by_name = {asset.name: asset for asset in assets}
    for name in names or []:
        if name not in by_name:
            raise UserError(f"unknown asset {name!r}; known assets: {', '.join(by_name)}")
    chosen = [by_name[name] for name in dict.fromkeys(names)] if names else assets
    console = Console(stderr=True)
    ready: dict[str, Path] = {}
    failures = []
    for asset in chosen:
        try:
            ready[asset.name] = fetch_asset(asset, Path(root), quiet=quiet, console=console)
        except UserError as exc:
            failures.append(str(exc))
    if failures:
        done = f"; ready: {', '.join(ready)}" if ready else ""
        raise UserError(f"{len(failures)} of {len(chosen)} assets failed: " + "; ".join(failures) + done)
    return list(ready.values())
