"""`train.py export --format timm` and `train.py push`: a student timm and the Hugging Face Hub load.

The push is a thin call over the folder `write_timm_folder` writes and the tests load with
timm: it builds (or refreshes) that folder, then hands it to `huggingface_hub`'s
`create_repo` + `upload_folder`. huggingface_hub is optional (timm installs it; the `hub`
extra names it) and is imported only here, when a push runs. The token is huggingface_hub's
own (`hf auth login`, or HF_TOKEN in the environment), never a command-line argument that
would end up in the shell's history.
"""

from __future__ import annotations

from pathlib import Path

from amalgam.errors import UserError
from amalgam.models.timm_folder import write_timm_folder
from amalgam.ui import console

HUB_HINT = "pip install -e .[hub] (or pip install huggingface_hub)"


def export_timm(source: Path, out: Path | None = None) -> Path:
    """Write the timm folder and say how to load it; the path goes on its own line."""
    folder = write_timm_folder(source, out)
    console.print("wrote a timm model folder (config.json + model.safetensors):")
    console.print(f"  {folder}")
    console.print(f'load it with timm.create_model("local-dir:{folder}", pretrained=True)')
    return folder


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"


def push_to_hub(
    source: Path, repo_id: str, out: Path | None = None, private: bool | None = None,
    message: str | None = None,
) -> str:
    """Build the timm folder of a run, upload it to the Hub model repo `repo_id`; return its URL."""
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise UserError(f"REPO_ID must be USER/NAME (or ORG/NAME), got {repo_id!r}")
    try:
        from huggingface_hub import HfApi
    except ImportError as exc:
        raise UserError(f"`train.py push` needs huggingface_hub; {HUB_HINT}") from exc
    folder = export_timm(source, out)
    api = HfApi()
    try:
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), repo_type="model",
            commit_message=message or f"amalgam student from {Path(source).name}",
        )
    except Exception as exc:  # network, auth and Hub errors come in many types
        raise UserError(
            f"could not upload to the Hub repo {repo_id} ({_first_line(exc)}); check the network "
            "and your token (`hf auth login` or HF_TOKEN); the folder above is ready to upload by hand"
        ) from exc
    console.print(f"pushed to {url}")
    return str(url)
