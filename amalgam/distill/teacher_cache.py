"""Teacher logits computed once per (teacher checkpoints, training images, preprocessing).

Frozen teachers on a deterministic view give the same logits every epoch, every run and
for every logit-based method, so running them per batch is wasted work: with the cache,
multi-teacher KD costs about what training the student alone costs. Any change to a
teacher's weights or card, to the training images or labels, or to a teacher's input
recipe changes the key, so a stale entry is never found, let alone used.

Layout: `<root>/.cache/teachers/<task>/<key>.safetensors` holds `logits` float32 [N, K, L]
(padded local logits, as `TeacherEnsemble` returns them) and `<key>.json` a small index
(key, shapes, created) that is checked before the tensor is trusted.

What "the same logits" promises. The cache runs the prepared teachers (`inference_ensemble`)
in batches of `BUILD_BATCH`; the online path runs them on each training batch. A convolution's
result may depend on the batch it runs in and on the thread count (oneDNN and cuDNN choose
kernels and summation orders by shape; neither promises bit-equality across them), so:
- across batch sizes, thread counts or machines, a cached logit equals the online one to
  within 1e-4 of the largest |logit| in fp32 (only the summation order differs; about 1e-6
  is seen) and within 1e-2 of it in bf16 (the logits themselves are bf16, one unit in the last
  place being 2**-8 of a value); tests/test_teacher_cache.py checks exactly these bounds;
- bit-equality is promised only for the same batches on the same machine, build and thread
  count, e.g. an entry rebuilt in the same process, or a run and its resume.
Evaluation never uses the cache: it runs the unfolded fp32 teachers.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from amalgam import PROJECT_ROOT
from amalgam.distill.ensemble import TeacherEnsemble
from amalgam.distill.methods.base import Method, TeacherOutputs
from amalgam.distill.trainer import TeacherSource, TrainConfig
from amalgam.distill.views import to_unit_float
from amalgam.models.checkpoint import SUFFIXES, atomic_write_bytes, checkpoint_files, checkpoint_stem
from amalgam.models.frozen import resolve_precision
from amalgam.models.model_input import ModelInput
from amalgam.tasks.images import ImageSet
from amalgam.tasks.loader import TaskData
from amalgam.tasks.spec import TaskSpec, resolve_checkpoint_stem
from amalgam.ui import say, track

CACHE_FORMAT = "amalgam-teacher-logits/1"  # part of the key: a format change invalidates all
# Images per teacher pass while building: on the CPU small enough that the teachers'
# activations do not raise the run's peak memory much above training's own.
BUILD_BATCH = {"cpu": 32, "cuda": 256}


def default_cache_dir(task_dir_name: str, root: Path = PROJECT_ROOT) -> Path:
    return root / ".cache" / "teachers" / task_dir_name


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def teacher_weight_files(path: str | Path) -> list[Path]:
    """The files a teacher's weights and card live in: our safetensors + JSON pair, or one
    file as it is (the CAS771 reference app's bare `.pth`, whose preprocessing comes from the task)."""
    path = Path(path)
    if path.suffix not in SUFFIXES and path.is_file():
        return [path]
    stem = checkpoint_stem(path)
    return list(checkpoint_files(stem))


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    return memoryview(tensor.detach().cpu().contiguous().numpy()).cast("B")


def teacher_cache_key(
    checkpoints: Sequence[str | Path], images: ImageSet, inputs: Sequence[ModelInput],
    numerics: str = "fp32",
) -> str:
    """sha256 over everything the cached logits depend on, teacher order included.

    Per teacher: the digest of its weights and card and its input recipe; then the training
    images (values and shape) and labels, and how the teachers compute (`numerics`: precision,
    folding, layout). Labels are hashed because the index order of the set is what the cache
    is looked up by.
    """
    if len(checkpoints) != len(inputs):
        raise ValueError(f"{len(checkpoints)} checkpoints but {len(inputs)} input recipes")
    key = hashlib.sha256(CACHE_FORMAT.encode())
    key.update(numerics.encode())
    for checkpoint, model_input in zip(checkpoints, inputs, strict=True):
        for path in teacher_weight_files(checkpoint):
            key.update(_file_digest(path).encode())
        key.update(repr((model_input.img_size, tuple(model_input.mean), tuple(model_input.std),
                         model_input.in_chans)).encode())
    key.update(repr((tuple(images.images.shape), str(images.images.dtype))).encode())
    key.update(_tensor_bytes(images.images))
    key.update(_tensor_bytes(images.labels.to(torch.int64)))
    return key.hexdigest()


def expected_shape(ensemble: TeacherEnsemble, images: ImageSet) -> tuple[int, int, int]:
    return len(images), len(ensemble.teachers), ensemble.roster.local_mask.shape[1]


def read_cached_logits(cache_dir: Path, key: str, shape: tuple[int, int, int]) -> torch.Tensor:
    """The cached logits, or an exception saying why the entry cannot be trusted."""
    index = json.loads((cache_dir / f"{key}.json").read_text())
    if index.get("format") != CACHE_FORMAT:
        raise ValueError(f"index is in format {index.get('format')!r}, not {CACHE_FORMAT!r}")
    if index.get("key") != key:
        raise ValueError(f"index names key {str(index.get('key'))[:12]}…, not {key[:12]}…")
    if tuple(index.get("shape", ())) != shape:
        raise ValueError(f"index says shape {index.get('shape')}, expected {list(shape)}")
    logits = load_file(str(cache_dir / f"{key}.safetensors"))["logits"]
    if tuple(logits.shape) != shape or logits.dtype != torch.float32:
        raise ValueError(f"stored logits are {logits.dtype} {list(logits.shape)}, "
                         f"expected float32 {list(shape)}")
    if not torch.isfinite(logits).all():
        raise ValueError("stored logits hold non-finite values")
    return logits


def compute_teacher_logits(
    ensemble: TeacherEnsemble, images: ImageSet, device: torch.device, quiet: bool,
    batch_size: int | None = None,
) -> torch.Tensor:
    """All teachers on the whole set, in order, on exactly the view training would give."""
    batch_size = batch_size or BUILD_BATCH.get(device.type, 32)
    starts = range(0, len(images), batch_size)
    parts = []
    with torch.inference_mode():
        for start in track(starts, len(starts), "teacher logits", quiet):
            view = to_unit_float(images.images[start : start + batch_size], device)
            parts.append(ensemble(view).float().cpu())
    return torch.cat(parts)


def write_cached_logits(cache_dir: Path, key: str, logits: torch.Tensor) -> None:
    """Tensor first, index last: an index only ever points at a complete tensor file."""
    tensors = {"logits": logits.contiguous()}
    atomic_write_bytes(cache_dir / f"{key}.safetensors",
                       lambda p: save_file(tensors, str(p), metadata={"key": key}))
    index = {"format": CACHE_FORMAT, "key": key, "shape": list(logits.shape),
             "dtype": "float32", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    text = json.dumps(index, indent=2)
    atomic_write_bytes(cache_dir / f"{key}.json", lambda p: p.write_text(text))


def load_or_build_teacher_logits(
    ensemble: TeacherEnsemble, images: ImageSet, key: str, cache_dir: Path,
    device: torch.device, quiet: bool = False,
) -> torch.Tensor:
    """Cached logits [N, K, L] on the CPU; computed and stored when missing or untrustworthy."""
    shape = expected_shape(ensemble, images)
    cache_dir = Path(cache_dir)
    if (cache_dir / f"{key}.json").exists() or (cache_dir / f"{key}.safetensors").exists():
        try:
            return read_cached_logits(cache_dir, key, shape)
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
            # never quiet: a rebuilt cache costs time the user should know about
            say(f"[yellow]warning:[/] teacher cache {cache_dir / key}.* is unusable ({exc}); rebuilding it")
    say(f"computing teacher logits for {shape[0]} images (cached in {cache_dir})", quiet)
    logits = compute_teacher_logits(ensemble, images, device, quiet)
    write_cached_logits(cache_dir, key, logits)
    return logits


def cached_teacher_source(logits: torch.Tensor) -> TeacherSource:
    """Look the batch's teacher logits up by training-set index instead of running teachers.

    Pass the logits already on the training device (they are small: N x K x L floats) so a
    lookup is one gather there, with no copy per batch."""
    def source(index: torch.Tensor, view: torch.Tensor) -> TeacherOutputs:
        return TeacherOutputs(logits[index.to(logits.device)].to(view.device))

    return source


def online_source(ensemble: TeacherEnsemble, with_features: bool = False) -> TeacherSource:
    """All teachers on the batch's own view, needed when the view is random or features are used."""
    def source(index: torch.Tensor, view: torch.Tensor) -> TeacherOutputs:
        if with_features:
            return TeacherOutputs(*ensemble.forward_with_features(view))
        return TeacherOutputs(ensemble(view))

    return source


def inference_ensemble(ensemble: TeacherEnsemble, config: TrainConfig) -> TeacherEnsemble:
    """The teachers as training runs them: BatchNorm folded, in bf16 where that is native,
    NHWC unless `channels_last` is off. The cache and the online path both use this, so a
    cached target equals the online one up to the batch-size rounding bounded in the module
    docstring (bit-equal when the batches are the same)."""
    precision = resolve_precision(config.teacher_precision, torch.device(config.device))
    return ensemble.for_inference(precision, config.channels_last)


def teacher_source_for(
    spec: TaskSpec, data: TaskData, method: Method, config: TrainConfig, ensemble: TeacherEnsemble,
    root: Path = PROJECT_ROOT, cache_dir: Path | None = None,
) -> TeacherSource:
    """Cached logits when the training view is deterministic and the method needs only
    logits; otherwise the teachers run on every batch."""
    device = torch.device(config.device)
    ensemble = inference_ensemble(ensemble, config)
    if config.augment != "none" or method.needs_features:
        return online_source(ensemble, with_features=method.needs_features)
    stems = [resolve_checkpoint_stem(spec, teacher, root) for teacher in spec.teachers]
    key = teacher_cache_key(stems, data.train, ensemble.inputs, ensemble.numerics)
    directory = cache_dir or default_cache_dir(spec.dir_name, root)
    logits = load_or_build_teacher_logits(ensemble, data.train, key, directory, device, config.quiet)
    return cached_teacher_source(logits.to(device))
