"""Teacher outputs computed once per (teacher checkpoints, training images, views, numerics).

Frozen teachers on a fixed view give the same outputs every epoch, every run and for every
method, so running them per batch is wasted work: with the cache, multi-teacher distillation
costs about what training the student alone costs. A flip shows each image in one of two
fixed views, so `--augment flip` caches both (plain and mirrored) and the trainer picks per
sample the view the student saw. Feature methods (SimKD, cfl) get each teacher's last
feature map too, in 16 bits and memory-mapped (amalgam/distill/teachers/mapped_rows.py), so RAM does
not grow with the dataset. Methods that read maps only through FitNet's hint loss (`fitnet`,
`fitnet+*`, `adaptive`) get each map's hint reduction at the student's map size instead
(`HintTarget`: the same loss, float32, 64x smaller under a 2x2 student and 16x16 teachers).
Random crops have too many views: their teachers run online, as they do when an entry
would exceed its size budget (16 GiB by default, $AMALGAM_TEACHER_CACHE_GB; 0 turns the cache
off) or the free disk; a one-line note says which.

A method whose target is a function of the teachers' logits alone (`Method.fixed_targets`: the
"Unifying Heterogeneous Classifiers" combination of `uhc-kd`, `amalgam-kd` and the defaults
built on them) gets it computed once per image and view when the entry is read
(`memoised_targets`), not per batch per epoch. Under torchrun the ranks build a missing entry
together, each its share of the blocks (amalgam/distill/teachers/shared_build.py).

Any change to a teacher's weights or card, to the training images or labels, to a teacher's
input recipe, to how the teachers compute, to the views or to the feature precision changes
the key, so a stale entry is never found, let alone used.

Layout under `<root>/.cache/teachers/<task>/`: `<key>.logits.bin` float32 [N, V, K, L]
(padded local logits, as `TeacherEnsemble` returns them), `<key>.features<k>.bin` [N, V, C, H, W]
per teacher when features are cached ([N, V, C, h, w] hint reductions, with `<key>.hint_energy.bin`
[N, V, K]), and `<key>.json`, the index (key, views, shapes, dtypes, created), written last and
checked before anything is trusted.

What "the same outputs" promises. The cache runs the prepared teachers (`inference_ensemble`)
in batches of `BUILD_BATCH`; the online path runs them on each training batch. A convolution's
result may depend on the batch it runs in and on the thread count (oneDNN and cuDNN choose
kernels and summation orders by shape; neither promises bit-equality across them), so:
- across batch sizes, thread counts or machines, a cached logit equals the online one to
  within 1e-4 of the largest |logit| in fp32 (only the summation order differs; about 1e-6
  is seen) and within 1e-2 of it in bf16 (the logits themselves are bf16, one unit in the last
  place being 2**-8 of a value); a cached feature map within 1e-3 of the largest |feature|
  for fp32 teachers (stored in float16: one rounding is 2**-11 of a value) and within 1e-2
  for bf16 teachers (stored in bfloat16, their own precision: no rounding added); a hint
  reduction is stored in float32 (no rounding added beyond the summation order);
  tests/test_teacher_cache.py checks exactly these bounds, for both flip views;
- bit-equality is promised only for the same batches on the same machine, build and thread
  count, e.g. an entry rebuilt in the same process, or a run and its resume.
Evaluation never uses the cache: it runs the unfolded fp32 teachers.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from amalgam import PROJECT_ROOT
from amalgam.distill.engine.distributed import DistEnv
from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.engine.trainer import TeacherSource
from amalgam.distill.engine.views import CACHEABLE_VIEWS
from amalgam.distill.losses.features import HintTarget, reduce_for_hint
from amalgam.distill.methods.base import Method, TeacherOutputs
from amalgam.distill.teachers.ensemble import TeacherEnsemble
from amalgam.distill.teachers.mapped_rows import MappedRows
from amalgam.distill.teachers.shared_build import load_or_build_shared
from amalgam.distill.teachers.store import (
    BUDGET_ENV,
    CACHE_FORMAT,
    CachedTeachers,
    CacheUnavailable,
    cache_budget_bytes,
)
from amalgam.models.checkpoint import SUFFIXES, checkpoint_files, checkpoint_stem
from amalgam.models.frozen import resolve_precision
from amalgam.models.model_input import ModelInput
from amalgam.tasks.images import ImageSet
from amalgam.tasks.loader import TaskData
from amalgam.tasks.spec import TaskSpec, resolve_checkpoint_stem
from amalgam.ui import say, track


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
    numerics: str = "fp32", views: Sequence[str] = ("plain",), features: str | None = None,
    hint_size: tuple[int, int] | None = None, weight_digests: Sequence[str | None] | None = None,
) -> str:
    """sha256 over everything the cached outputs depend on, teacher order included.

    Per teacher: the digest of its weights and card and its input recipe; then the training
    images (values and shape) and labels, how the teachers compute (`numerics`: precision,
    folding, layout), the cached views, the feature maps' storage dtype (None: no features)
    and the student map size they are reduced to for hints (None: whole maps).
    Labels are hashed because the index order of the set is what the cache is looked up by.
    """
    if len(checkpoints) != len(inputs):
        raise ValueError(f"{len(checkpoints)} checkpoints but {len(inputs)} input recipes")
    key = hashlib.sha256(CACHE_FORMAT.encode())
    key.update(repr((numerics, tuple(views), features, hint_size and tuple(hint_size))).encode())
    # teachers given in memory (amalgam.distil) have no files: the digests of their tensors stand in
    digests = weight_digests or [None] * len(checkpoints)
    for checkpoint, model_input, digest in zip(checkpoints, inputs, digests, strict=True):
        if digest is not None:
            key.update(digest.encode())
        for path in () if digest is not None else teacher_weight_files(checkpoint):
            key.update(_file_digest(path).encode())
        key.update(repr((model_input.img_size, tuple(model_input.mean), tuple(model_input.std),
                         model_input.in_chans)).encode())
    key.update(repr((tuple(images.images.shape), str(images.images.dtype))).encode())
    key.update(_tensor_bytes(images.images))
    key.update(_tensor_bytes(images.labels.to(torch.int64)))
    return key.hexdigest()


def feature_storage(ensemble: TeacherEnsemble, hints: bool = False) -> str:
    """bf16 teachers' feature maps are bf16 already (stored as they are); fp32 ones go to float16;
    hint reductions (small, sums of many values) stay float32."""
    if hints:
        return "float32"
    return "bfloat16" if ensemble.precision == "bf16" else "float16"


def memoised_targets(method: Method, logits: torch.Tensor, quiet: bool = True) -> torch.Tensor:
    """`method.teacher_targets` of every cached row [R, K, L]: [R, C] float32, beside the logits.

    A frozen teacher's row never changes, so neither does the target built from it: computed here
    once, it is looked up per batch like the logits. It never takes more memory than the logits
    (every class is known to some teacher, so C <= K * L)."""
    block = method.target_block_rows(logits)
    starts = range(0, len(logits), block)
    with torch.no_grad():
        parts = [method.teacher_targets(logits[start:start + block]).float()
                 for start in track(starts, len(starts), "combined targets, once", quiet)]
    return torch.cat(parts) if parts else logits.new_zeros(0, method.roster.num_classes)


def cached_teacher_source(cache: CachedTeachers, device: torch.device | str = "cpu",
                          method: Method | None = None, quiet: bool = True) -> TeacherSource:
    """Look the batch's teacher outputs up by training-set index and view instead of running
    teachers. The logits (small: N x V x K x L floats) live on the training device, so their
    lookup is one gather there; feature maps are read from the memory map, only the batch's rows.
    With a `method` whose targets are `fixed_targets`, those are computed once per row here and
    looked up the same way."""
    device = torch.device(device)
    logits = cache.logits.flatten(0, 1).to(device)  # row = image * V + view
    targets = None
    if method is not None and method.fixed_targets:
        started = time.perf_counter()
        targets = memoised_targets(method, logits, quiet)
        say(f"the method's targets computed once for {len(targets)} image-views "
            f"({time.perf_counter() - started:.1f} s)", quiet)
    features: list[MappedRows] | None = cache.features
    hints = cache.hints
    energy = hints.energy.flatten(0, 1).to(device) if hints else None  # [N * V, K]
    n_views = len(cache.views)

    def source(index: torch.Tensor, view: torch.Tensor,
               mirrored: torch.Tensor | None = None) -> TeacherOutputs:
        rows = index.cpu() * n_views
        if mirrored is not None and bool(mirrored.any()):
            if "mirrored" not in cache.views:
                raise ValueError(f"the teacher cache holds views {list(cache.views)}, not mirrored ones")
            rows = rows + mirrored.cpu().long() * cache.views.index("mirrored")
        batch_logits = logits[rows.to(device)].to(view.device)
        batch_targets = None if targets is None else targets[rows.to(device)].to(view.device)
        if features is None:
            return TeacherOutputs(batch_logits, index=index, targets=batch_targets)
        maps = [store.rows(rows).to(view.device, non_blocking=True).float() for store in features]
        if hints is None:
            return TeacherOutputs(batch_logits, maps, index, batch_targets)
        batch_energy = energy[rows.to(device)].to(view.device)
        return TeacherOutputs(batch_logits, [
            HintTarget(reduced, batch_energy[:, k], size)
            for k, (reduced, size) in enumerate(zip(maps, hints.teacher_sizes, strict=True))
        ], index, batch_targets)

    return source


def online_source(ensemble: TeacherEnsemble, with_features: bool = False,
                  hint_size: tuple[int, int] | None = None) -> TeacherSource:
    """All teachers on the batch's own view: for random crops, or when the cache is off. With
    `hint_size`, feature maps are handed over as their hint reductions, as the cache does."""
    def source(index: torch.Tensor, view: torch.Tensor,
               mirrored: torch.Tensor | None = None) -> TeacherOutputs:
        if not with_features:
            return TeacherOutputs(ensemble(view), index=index)
        logits, maps = ensemble.forward_with_features(view)
        if hint_size is not None:
            maps = [reduce_for_hint(feature_map, hint_size) for feature_map in maps]
        return TeacherOutputs(logits, maps, index)

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
    root: Path = PROJECT_ROOT, cache_dir: Path | None = None, budget_bytes: int | None = None,
    student_map_size: tuple[int, int] | None = None, weight_digests: Sequence[str | None] | None = None,
    dist_env: DistEnv | None = None,
) -> TeacherSource:
    """Cached teacher outputs for every view the augmentation can show (with feature maps when
    the method needs them, as hint reductions to `student_map_size` when it reads them only
    through hints); the teachers online, with a one-line note saying why, when the views are
    random or the cache would not fit its budget. Under torchrun (`dist_env`) every rank must
    call it: the ranks build the entry together (teachers/shared_build.py)."""
    device = torch.device(config.device)
    ensemble = inference_ensemble(ensemble, config)
    with_features = method.needs_features
    hint_size = student_map_size if with_features and method.hint_features_only else None
    views = CACHEABLE_VIEWS[config.augment]
    if views is None:
        say(f"note: teachers run on every batch: --augment {config.augment} draws random crops, too many "
            "views to cache (--augment flip or none caches the teachers' outputs)")
        return online_source(ensemble, with_features, hint_size)
    budget = cache_budget_bytes() if budget_bytes is None else budget_bytes
    if budget == 0:  # off: an entry already on disk is not read either
        say(f"note: teachers run on every batch: the teacher cache is off (its budget {BUDGET_ENV} is 0)")
        return online_source(ensemble, with_features, hint_size)
    features = feature_storage(ensemble, hint_size is not None) if with_features else None
    stems = [resolve_checkpoint_stem(spec, teacher, root) for teacher in spec.teachers]
    key = teacher_cache_key(stems, data.train, ensemble.inputs, ensemble.numerics, views, features, hint_size,
                            weight_digests)
    directory = cache_dir or default_cache_dir(spec.dir_name, root)
    try:
        cache = load_or_build_shared(dist_env or DistEnv(), ensemble, data.train, key, directory, views,
                                     features, budget, device, config.quiet, hint_size)
    except CacheUnavailable as exc:
        say(f"note: teachers run on every batch: {exc}")
        return online_source(ensemble, with_features, hint_size)
    return cached_teacher_source(cache, device, method, config.quiet)
