"""Training speed and memory: plain CE vs our KD (cached / online teachers) vs the CAS771 reference app's way.

All four arms train the same MobileNetV3 student on the same generated CAS771 Task-B-layout
data (three 5-class teachers, 64x64 images, 1,200 training images). Each arm runs in a fresh
spawned process so its peak resident memory (`ru_maxrss`) is its own.

    (a) ce         amalgam Trainer, method "ce"
    (b) kd-cached  amalgam Trainer, method "kd", teacher logits from the on-disk cache
    (c) kd-online  amalgam Trainer, method "kd", all teachers on every batch
    (d) seed       written here the way the reference app works: a Dataset that decodes each image
                   through PIL with torchvision transforms every epoch, every teacher on every
                   batch, soft labels built sample by sample in Python

Images/s are steady state: the first steps of each arm are a warm-up and not timed; arms
(b) and (c)/(d) differ in cost by two orders of magnitude, so the cheap arms time more steps.
Arm (b) builds its cache cold, in its own process, before timing: the build time is printed
and the build counts towards (b)'s peak memory. `--quick` trains on 384 of the 1,200 images
(128 from each teacher's file) so that the one-off cache build fits the time budget; the
steady-state rates do not depend on the set's size. The last line is one JSON object.

    python bench/bench_train.py --quick
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path
from queue import Empty

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

N_TRAIN, N_QUICK, SIZE, BATCH, STUDENT = 1200, 384, 64, 32, "mobilenetv3"
CHEAP_ARMS = ("ce", "kd-cached")
ARMS = ("ce", "kd-cached", "kd-online", "seed")
TARGETS = {"kd_cached_over_ce": (">=", 0.9), "kd_cached_over_seed": (">=", 8.0),  # issue 5
           "kd_online_over_seed": (">=", 2.0), "mem_kd_cached_over_ce": ("<=", 1.3)}


def default_teacher_arch() -> str:
    """The reference app's CNN when this checkout has it, else our CNN of the same role."""
    import importlib.util

    return "seed-cnn" if importlib.util.find_spec("amalgam.models.cas771_format") else "cnn-small"


# --- the shared inputs, written once by the parent ------------------------------------------

def make_task_b_files(workdir: Path, n_train: int) -> None:
    """Task B's released layout in memory: per teacher, HWC uint8 images and original labels."""
    from amalgam.tasks.builtin import TASK_B_CLASSES, TASK_B_TEACHERS

    original = dict(TASK_B_CLASSES)
    gen = torch.Generator().manual_seed(0)
    files = []
    per_teacher = n_train // len(TASK_B_TEACHERS)
    for classes in TASK_B_TEACHERS:
        labels = torch.tensor([original[classes[i % len(classes)]] for i in range(per_teacher)])
        tint = (labels[:, None, None, None] * 37 % 200).to(torch.uint8)  # a little class signal
        noise = torch.randint(0, 56, (per_teacher, SIZE, SIZE, 3), generator=gen, dtype=torch.uint8)
        files.append({"data": noise + tint, "labels": labels})
    torch.save(files, workdir / "task_b_train.pt")


def to_task_space(files: list[dict]):
    """The released per-teacher files as one ImageSet in global label order (NCHW)."""
    from amalgam.tasks.builtin import TASK_B_CLASSES
    from amalgam.tasks.images import ImageSet

    to_global = {label: g for g, (_, label) in enumerate(TASK_B_CLASSES)}
    images = torch.cat([f["data"] for f in files]).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor([to_global[int(x)] for f in files for x in f["labels"]])
    return ImageSet(images, labels)


def save_teachers(workdir: Path, arch: str, mean: tuple, std: tuple) -> None:
    """Random-init teachers (speed does not depend on the weights) in checkpoint layout."""
    from amalgam.models.checkpoint import ModelCard, save_checkpoint
    from amalgam.models.teacher_archs import create_teacher
    from amalgam.tasks.builtin import get_task

    for k, teacher in enumerate(get_task("B").teachers, start=1):
        torch.manual_seed(k)
        model = create_teacher(arch, len(teacher.classes))
        card = ModelCard(kind="teacher", arch=arch, classes=list(teacher.classes), img_size=SIZE,
                         mean=list(mean), std=list(std), task="B")
        save_checkpoint(workdir / "checkpoints" / "TaskB" / teacher.name, model.state_dict(), card)


# --- the arms, each in its own process -------------------------------------------------------

def timed(step, batches, warmup: int) -> tuple[float, int]:
    """Run `step(batch)` over batches; seconds and images of the steps after the warm-up."""
    seconds, images = 0.0, 0
    for i, batch in enumerate(batches):
        started = time.perf_counter()
        n = step(batch)
        if i >= warmup:
            seconds += time.perf_counter() - started
            images += n
    return seconds, images


def take(n: int, epoch_batches):
    """The first n batches of epoch_batches(0), epoch_batches(1), … (as many epochs as needed)."""
    return itertools.islice(itertools.chain.from_iterable(map(epoch_batches, itertools.count())), n)


def run_amalgam_arm(arm: str, workdir: Path, steps: int, warmup: int, precision: str) -> dict:
    from amalgam.distill.methods import MethodOptions, build_method
    from amalgam.distill.teacher_cache import inference_ensemble, online_source, teacher_source_for
    from amalgam.distill.teacher_loading import load_ensemble
    from amalgam.distill.trainer import TrainConfig, Trainer, batch_indices, epoch_generator
    from amalgam.models.model_input import ModelInput
    from amalgam.models.students import create_student
    from amalgam.tasks.builtin import get_task
    from amalgam.tasks.loader import TaskData, channel_stats

    spec = get_task("B")
    train = to_task_space(torch.load(workdir / "task_b_train.pt", weights_only=True))
    mean, std = channel_stats(train.images, 3)
    data = TaskData(spec, train, train.subset(torch.arange(24)), train.subset(torch.arange(24)), mean, std)
    config = TrainConfig(batch_size=BATCH, augment="none", quiet=True, teacher_precision=precision)
    options = MethodOptions(temperature=2.0, alpha=0.1)  # the reference app's defaults, as in arm (d)
    method = build_method("ce" if arm == "ce" else "kd", spec.roster(), options)
    extra, source = {}, None
    if arm != "ce":
        ensemble = load_ensemble(spec, torch.device("cpu"), workdir)
        started = time.perf_counter()
        if arm == "kd-cached":
            source = teacher_source_for(spec, data, method, config, ensemble, workdir)
            extra["cache_build_s"] = round(time.perf_counter() - started, 2)
            del ensemble  # the cached source no longer needs the teachers
        else:
            source = online_source(inference_ensemble(ensemble, config))  # as training would run them
    torch.manual_seed(0)
    student = create_student(STUDENT, spec.num_classes)
    trainer = Trainer(student, method, ModelInput(SIZE, mean, std), data.train, data.val,
                      spec.num_classes, config, source)
    trainer.student.train()
    generator = epoch_generator(config.seed, 0)

    def step(index: torch.Tensor) -> int:
        trainer._step(index, generator, 0)  # the trainer's own step, without validation
        return len(index)

    def epoch_batches(epoch: int) -> list[torch.Tensor]:
        return batch_indices(len(train), BATCH, epoch_generator(config.seed, epoch))

    seconds, images = timed(step, take(warmup + steps, epoch_batches), warmup)
    return {**extra, "seconds": seconds, "images": images}


def run_seed_arm(workdir: Path, steps: int, warmup: int) -> dict:
    """The reference app's way, written here: per-sample PIL, teachers per batch, soft-label loop."""
    import torch.nn.functional as F
    from PIL import Image
    from torch.utils.data import ConcatDataset, DataLoader, Dataset
    from torchvision import transforms

    from amalgam.models.checkpoint import load_model
    from amalgam.models.students import create_student
    from amalgam.tasks.builtin import TASK_B_CLASSES, get_task
    from amalgam.tasks.loader import channel_stats

    spec = get_task("B")
    files = torch.load(workdir / "task_b_train.pt", weights_only=True)
    to_global = {label: g for g, (_, label) in enumerate(TASK_B_CLASSES)}
    mean, std = channel_stats(to_task_space(files).images, 3)
    transform = transforms.Compose([transforms.Resize((SIZE, SIZE)), transforms.ToTensor(),
                                    transforms.Normalize(mean, std)])

    class TeacherFile(Dataset):
        def __init__(self, file: dict):
            self.data, self.labels = file["data"].numpy(), file["labels"].tolist()

        def __len__(self) -> int:
            return len(self.labels)

        def __getitem__(self, i: int):
            return transform(Image.fromarray(self.data[i])), to_global[self.labels[i]]

    loader = DataLoader(ConcatDataset([TeacherFile(f) for f in files]), batch_size=BATCH, shuffle=True,
                        num_workers=0, generator=torch.Generator().manual_seed(0))
    teachers = [load_model(workdir / "checkpoints" / "TaskB" / t.name)[0].eval() for t in spec.teachers]
    teacher_classes = [spec.teacher_global_indices(t) for t in spec.teachers]
    torch.manual_seed(0)
    student = create_student(STUDENT, spec.num_classes).train()
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3, weight_decay=5e-4)
    temperature, alpha = 2.0, 0.1

    def soft_labels(teacher_logits: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(labels), spec.num_classes)
        for i, label in enumerate(labels.tolist()):
            counts = torch.zeros(spec.num_classes)
            for logits, classes in zip(teacher_logits, teacher_classes, strict=True):
                if label in classes:
                    probs = F.softmax(logits[i] / temperature, dim=0)
                    for j, c in enumerate(classes):
                        out[i, c] += probs[j]
                        counts[c] += 1
            out[i] = out[i] / counts.clamp(min=1)
            out[i] = out[i] / out[i].sum()
        return out

    def step(batch) -> int:
        images, labels = batch
        with torch.no_grad():
            teacher_logits = [teacher(images) for teacher in teachers]
        targets = soft_labels(teacher_logits, labels)
        logits = student(images)
        kd = F.kl_div(F.log_softmax(logits / temperature, dim=1), targets, reduction="batchmean")
        loss = (1 - alpha) * F.cross_entropy(logits, labels) + alpha * temperature**2 * kd
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return len(labels)

    # every epoch decodes every image through PIL again
    seconds, images = timed(step, take(warmup + steps, lambda e: loader), warmup)
    return {"seconds": seconds, "images": images}


def arm_main(arm: str, workdir: str, steps: int, warmup: int, precision: str, queue) -> None:
    workdir_path = Path(workdir)
    if arm == "seed":
        result = run_seed_arm(workdir_path, steps, warmup)
    else:
        result = run_amalgam_arm(arm, workdir_path, steps, warmup, precision)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    result["threads"] = torch.get_num_threads()
    queue.put(result)


def run_arm(arm: str, workdir: Path, steps: int, warmup: int, precision: str) -> dict:
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=arm_main, args=(arm, str(workdir), steps, warmup, precision, queue))
    process.start()
    while True:  # a child that dies never answers: do not wait for it forever
        try:
            result = queue.get(timeout=5)
            break
        except Empty:
            if not process.is_alive():
                raise SystemExit(f"arm {arm} failed with exit code {process.exitcode}") from None
    process.join()
    result["images_per_s"] = result["images"] / result["seconds"]
    return result


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def summarise(results: dict[str, dict], n_train: int) -> dict:
    """Print the ratios against the issue's targets; return them with the raw figures."""
    ips = {arm: r["images_per_s"] for arm, r in results.items()}
    ratios = {
        "kd_cached_over_ce": ips["kd-cached"] / ips["ce"],
        "kd_online_over_ce": ips["kd-online"] / ips["ce"],
        "kd_cached_over_seed": ips["kd-cached"] / ips["seed"],
        "kd_online_over_seed": ips["kd-online"] / ips["seed"],
        "mem_kd_cached_over_ce": results["kd-cached"]["peak_rss_mb"] / results["ce"]["peak_rss_mb"],
    }
    for key, value in ratios.items():
        line = f"  {key:<22} {value:6.2f}x"
        if key in TARGETS:
            op, bound = TARGETS[key]
            met = value >= bound if op == ">=" else value <= bound
            line += f"   target {op} {bound}: {'met' if met else 'NOT met'}"
        print(line)
    build_s = results["kd-cached"]["cache_build_s"]
    first_epoch = n_train / (build_s + n_train / ips["kd-cached"])  # the one-off build amortised
    print(f"  kd-cached first epoch, cache build included: {first_epoch:.1f} images/s")
    summary = {k: round(v, 3) for k, v in ratios.items()}
    for arm, r in results.items():
        name = arm.replace("-", "_")
        summary[f"images_per_s_{name}"] = round(r["images_per_s"], 1)
        summary[f"peak_rss_mb_{name}"] = round(r["peak_rss_mb"], 1)
    summary.update({"kd_cached_first_epoch_images_per_s": round(first_epoch, 1), "cache_build_s": build_s})
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (under 3 minutes on 2 cores)")
    parser.add_argument("--steps", type=int, help="timed steps of the arms that run teachers per batch")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of each arm")
    parser.add_argument("--teacher-arch", default=default_teacher_arch(),
                        help="teacher network (default: the reference app's CNN, seed-cnn, when available)")
    parser.add_argument("--teacher-precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="our arms' frozen teachers (the seed arm runs fp32, as the reference app did)")
    args = parser.parse_args()
    n_train = N_QUICK if args.quick else N_TRAIN
    heavy = args.steps or (6 if args.quick else N_TRAIN // BATCH)
    steps = {arm: (8 * heavy if arm in CHEAP_ARMS else heavy) for arm in ARMS}

    from amalgam.models.frozen import resolve_precision
    from amalgam.tasks.loader import channel_stats

    precision = resolve_precision(args.teacher_precision, torch.device("cpu"))
    results = {}
    with tempfile.TemporaryDirectory(prefix="amalgam-bench-") as tmp:
        workdir = Path(tmp)
        make_task_b_files(workdir, n_train)
        files = torch.load(workdir / "task_b_train.pt", weights_only=True)
        mean, std = channel_stats(to_task_space(files).images, 3)
        save_teachers(workdir, args.teacher_arch, mean, std)
        print(f"Task-B layout: {n_train} train images {SIZE}x{SIZE}, 3 teachers ({args.teacher_arch}, "
              f"5 classes each, ours in {precision}), student {STUDENT}, batch {BATCH}; "
              f"{args.warmup} warm-up + timed steps {steps}; load average {load_average()}", flush=True)
        for arm in ARMS:
            r = results[arm] = run_arm(arm, workdir, steps[arm], args.warmup, args.teacher_precision)
            build = f", cache built in {r['cache_build_s']:.1f}s (untimed)" if "cache_build_s" in r else ""
            print(f"  {arm:<10} {r['images_per_s']:8.1f} images/s   peak RSS {r['peak_rss_mb']:7.0f} MiB"
                  f"   ({r['threads']} threads{build})", flush=True)
    summary = summarise(results, n_train)
    print(f"  load average now {load_average()} (other processes on the machine distort all figures)")
    summary.update({"train_images": n_train, "quick": args.quick, "timed_steps": steps,
                    "warmup_steps": args.warmup, "teacher_arch": args.teacher_arch,
                    "teacher_precision": precision,
                    "load_average": load_average()})
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
