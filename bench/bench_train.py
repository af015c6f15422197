"""Training speed and memory: the default recipe vs plain CE vs the CAS771 reference app's algorithm.

All arms train a MobileNetV3-small student from scratch on the same generated CAS771
Task-B-layout data (three 5-class teachers of the reference app's CNN, 64x64 images, batch 32). Each
arm runs in a fresh spawned process so its peak resident memory (`ru_maxrss`) is its own.

    ce              amalgam Trainer, method "ce", the default recipe's views (crop-flip-cached: for CE,
                    which reads no teacher, crop-flip's views)
    default         amalgam Trainer, the default recipe's method, options and views, teachers from
                    the cache (both flip views, feature maps when the method uses them); the
                    cache is built cold in the arm's own process before timing: its time, the
                    images each teacher ran on and its size on disk are reported, and the build
                    counts towards the arm's peak memory
    default-online  the same, teachers run on every batch (what random crops or a cache over
                    its size budget cost)
    reference-app   the reference app's algorithm (SPEC section 5, its train.py), written here: a
                    Dataset that decodes each image through PIL and torchvision transforms every
                    epoch (DataLoader, 4 workers, as the reference app); per batch, each fp32 teacher runs
                    once, batched, on only the samples whose class it covers; soft labels placed
                    and counted with the reference app's per-sample Python loops; (1-a) CE + a T^2 KL;
                    torchvision mobilenet_v3_small (no downloaded weights) with the reference app's head;
                    Adam + StepLR. Every image is kept (the reference app drops the second copy of a
                    shared class's images; that changes the set's size, not the rate)

Images/s are steady state: the first steps of each arm are a warm-up and not timed; the
timed span includes fetching batches (the reference app's decoding). Arms that run teachers per
batch are slower, so the cheap arms time more steps. `--quick` trains on 384 images (128
from each teacher's file) so the one-off cache build fits the time budget; steady-state
rates do not depend on the set's size. The last line is one JSON object; `--csv PATH` also
writes the arms' table that docs/benchmarks/speed.md renders.

    OMP_NUM_THREADS=1 python bench/bench_train.py --quick --csv docs/benchmarks/data/training-speed.csv
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from arm_process import in_own_process  # noqa: E402  (bench/, the script's own folder)

N_TRAIN, N_QUICK, SIZE, BATCH, STUDENT, TEACHER_ARCH = 1500, 384, 64, 32, "mobilenetv3", "seed-cnn"
ARMS = ("ce", "default", "default-online", "reference-app")
HEAVY_ARMS = ("default-online", "reference-app")
APP_T, APP_ALPHA = 2.0, 0.1  # the reference app's defaults
TARGETS = {"default_over_ce": (">=", 0.87), "default_over_reference_app": (">=", 5.0),
           "mem_default_over_ce": ("<=", 1.3), "teacher_passes_per_image_view": ("<=", 1.0),
           "build_s_per_view_over_online_epoch_s": ("<=", 1.0)}


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


def save_teachers(workdir: Path, mean: tuple, std: tuple) -> None:
    """Random-init CAS771 reference-app CNN teachers (speed does not depend on the weights), twice: in our
    checkpoint layout, and as the bare state_dicts the reference app loads."""
    from amalgam.models.checkpoint import ModelCard, save_checkpoint
    from amalgam.models.teacher_archs import create_teacher
    from amalgam.tasks.builtin import get_task

    (workdir / "weights").mkdir()
    for k, teacher in enumerate(get_task("B").teachers, start=1):
        torch.manual_seed(k)
        model = create_teacher(TEACHER_ARCH, len(teacher.classes))
        card = ModelCard(kind="teacher", arch=TEACHER_ARCH, classes=list(teacher.classes), img_size=SIZE,
                         mean=list(mean), std=list(std), task="B")
        save_checkpoint(workdir / "checkpoints" / "TaskB" / teacher.name, model.state_dict(), card)
        torch.save(model.state_dict(), workdir / "weights" / f"data{k}.pth")


# --- the arms, each in its own process -------------------------------------------------------

def timed(step, batches, warmup: int) -> tuple[float, int]:
    """Run `step(batch)` over batches; wall seconds and images after the warm-up steps."""
    iterator = iter(batches)
    for batch in itertools.islice(iterator, warmup):
        step(batch)
    started, images = time.perf_counter(), 0
    for batch in iterator:
        images += step(batch)
    return time.perf_counter() - started, images


def take(n: int, epoch_batches):
    """The first n batches of epoch_batches(0), epoch_batches(1), … (as many epochs as needed)."""
    return itertools.islice(itertools.chain.from_iterable(map(epoch_batches, itertools.count())), n)


def count_teacher_images(ensemble) -> list[int]:
    """Images each teacher's first layer sees from now on (copies of the teachers share the hooks)."""
    counts = [0] * len(ensemble.teachers)
    for k, teacher in enumerate(ensemble.teachers):
        def hook(module, inputs, output, k=k):
            counts[k] += inputs[0].shape[0]
        next(teacher.children()).register_forward_hook(hook)
    return counts


def run_amalgam_arm(arm: str, workdir: Path, steps: int, warmup: int, precision: str,
                     augment: str) -> dict:
    from amalgam.distill.engine.batching import batch_indices, epoch_generator
    from amalgam.distill.engine.train_config import TrainConfig
    from amalgam.distill.engine.trainer import Trainer
    from amalgam.distill.engine.views import CACHEABLE_VIEWS
    from amalgam.distill.methods import MethodOptions, build_method
    from amalgam.distill.runs.recipes import LABELED_RECIPE, recipe_method_options
    from amalgam.distill.runs.run import fit_to_training_set, setup_feature_method
    from amalgam.distill.teachers.cache import inference_ensemble, online_source, teacher_source_for
    from amalgam.distill.teachers.loading import load_ensemble
    from amalgam.models.model_input import ModelInput
    from amalgam.models.students import create_student
    from amalgam.tasks.builtin import get_task
    from amalgam.tasks.loader import TaskData, channel_stats

    spec = get_task("B")
    train = to_task_space(torch.load(workdir / "task_b_train.pt", weights_only=True))
    mean, std = channel_stats(train.images, 3)
    data = TaskData(spec, train, train.subset(torch.arange(24)), train.subset(torch.arange(24)), mean, std)
    config = TrainConfig(batch_size=BATCH, augment=augment, quiet=True, teacher_precision=precision)
    name, options = ("ce", MethodOptions()) if arm == "ce" else (
        LABELED_RECIPE.values["method"], recipe_method_options(LABELED_RECIPE))
    method = build_method(name, spec.roster(), options)
    model_input = ModelInput(SIZE, mean, std)
    torch.manual_seed(0)
    student = create_student(STUDENT, spec.num_classes)
    extra, source = {"method": method.name}, None
    if arm != "ce":
        ensemble = load_ensemble(spec, torch.device("cpu"), workdir)
        map_size = None
        if method.needs_features:  # the regressors/projectors, sized on one dry batch as a run does
            map_size = setup_feature_method(method, student, model_input, ensemble, data, torch.device("cpu"))
        if arm == "default":
            counts = count_teacher_images(ensemble)
            started = time.perf_counter()
            source = teacher_source_for(spec, data, method, config, ensemble, workdir, workdir / "cache",
                                        student_map_size=map_size)
            n_views = len(CACHEABLE_VIEWS[config.augment] or ())
            extra.update(cache_build_s=round(time.perf_counter() - started, 2), cache_views=n_views,
                         teacher_passes_per_image_view=max(counts) / (len(train) * max(n_views, 1)),
                         cache_mb=sum(f.stat().st_size for f in (workdir / "cache").glob("*")) / 2**20)
        else:
            hint_size = map_size if method.hint_features_only else None
            source = online_source(inference_ensemble(ensemble, config), method.needs_features, hint_size)
        fit_to_training_set(method, source, data, config, ensemble)  # start-up, as a run does (untimed)
        del ensemble
    trainer = Trainer(student, method, model_input, data.train, data.val, spec.num_classes, config, source)
    trainer.student.train()
    generator = epoch_generator(config.seed, 0)

    def step(index: torch.Tensor) -> int:
        trainer._step(index, generator, 0)  # the trainer's own step, without validation
        return len(index)

    def epoch_batches(epoch: int) -> list[torch.Tensor]:
        return batch_indices(len(train), BATCH, epoch_generator(config.seed, epoch))

    seconds, images = timed(step, take(warmup + steps, epoch_batches), warmup)
    return {**extra, "seconds": seconds, "images": images}


def run_reference_app_arm(workdir: Path, steps: int, warmup: int) -> dict:
    """The reference app's train.py algorithm (see the module docstring); our code, its steps."""
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    from amalgam.models.cas771_format import Cas771TeacherCNN, build_cas771_student
    from amalgam.tasks.builtin import get_task
    from amalgam.tasks.loader import channel_stats

    spec = get_task("B")
    train = to_task_space(torch.load(workdir / "task_b_train.pt", weights_only=True))
    mean, std = channel_stats(train.images, 3)
    mappings = [spec.teacher_global_indices(t) for t in spec.teachers]  # local → global, per teacher
    teacher_ids = [[k for k, m in enumerate(mappings) if label in m] for label in train.labels.tolist()]
    transform = transforms.Compose([transforms.ToPILImage(), transforms.Resize((SIZE, SIZE)),
                                    transforms.ToTensor(), transforms.Normalize(list(mean), list(std))])

    class ReferenceAppDataset(Dataset):
        def __len__(self) -> int:
            return len(train)

        def __getitem__(self, i: int):
            return transform(train.images[i]), int(train.labels[i]), teacher_ids[i]

    def collate(items):
        return (torch.stack([x for x, _, _ in items]), torch.tensor([y for _, y, _ in items]),
                [ids for _, _, ids in items])

    loader = DataLoader(ReferenceAppDataset(), batch_size=BATCH, shuffle=True, num_workers=4,
                        pin_memory=torch.cuda.is_available(), collate_fn=collate,
                        multiprocessing_context="fork",  # Linux's default, where the reference app ran
                        generator=torch.Generator().manual_seed(0))
    teachers = []
    for k in range(1, len(mappings) + 1):
        teacher = Cas771TeacherCNN(5)
        teacher.load_state_dict(torch.load(workdir / "weights" / f"data{k}.pth", weights_only=True))
        teachers.append(teacher.eval())
    torch.manual_seed(0)
    student = build_cas771_student(spec.num_classes, "mobilenet_v3_small").train()
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=30, gamma=0.5)

    def soft_labels(images: torch.Tensor, ids: list[list[int]], num_classes: int) -> torch.Tensor:
        out = torch.zeros(len(ids), num_classes)
        for k, (teacher, mapping) in enumerate(zip(teachers, mappings, strict=True)):
            covered = [i for i, sample_ids in enumerate(ids) if k in sample_ids]
            if not covered:
                continue
            with torch.no_grad():
                probs = F.softmax(teacher(images[covered]) / APP_T, dim=1)
                for row, i in enumerate(covered):
                    for local, global_index in enumerate(mapping):
                        out[i, global_index] += probs[row, local]
        counts = torch.zeros(len(ids), num_classes)
        for i, sample_ids in enumerate(ids):
            for k in sample_ids:
                for global_index in mappings[k]:
                    counts[i, global_index] += 1
        valid = counts > 0
        out[valid] /= counts[valid]
        return out

    def step(batch) -> int:
        images, labels, ids = batch
        logits = student(images)
        targets = soft_labels(images, ids, logits.shape[1])
        kd = F.kl_div(F.log_softmax(logits / APP_T, dim=1), targets, reduction="batchmean") * APP_T**2
        loss = (1 - APP_ALPHA) * F.cross_entropy(logits, labels) + APP_ALPHA * kd
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        _ = (logits.argmax(1) == labels).sum().item(), loss.item()  # the reference app logs both per step
        return len(labels)

    def epoch_batches(epoch: int):
        if epoch:
            scheduler.step()
        yield from loader  # every epoch decodes every image through PIL again, in fresh workers

    seconds, images = timed(step, take(warmup + steps, epoch_batches), warmup)
    return {"seconds": seconds, "images": images}


def arm_main(arm: str, workdir: str, steps: int, warmup: int, precision: str, augment: str, queue) -> None:
    workdir_path = Path(workdir)
    if arm == "reference-app":
        result = run_reference_app_arm(workdir_path, steps, warmup)
    else:
        result = run_amalgam_arm(arm, workdir_path, steps, warmup, precision, augment)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    result["threads"] = torch.get_num_threads()
    queue.put(result)


def run_arm(arm: str, workdir: Path, steps: int, warmup: int, precision: str, augment: str) -> dict:
    result = in_own_process(arm_main, arm, str(workdir), steps, warmup, precision, augment)
    result["images_per_s"] = result["images"] / result["seconds"]
    return result


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def arm_names(method: str, views: str) -> dict[str, str]:
    """What each arm is, as the speed table names it."""
    return {"ce": f"`ce`, {views}", "default": f"default (`{method}`), {views}, teachers from the cache",
            "default-online": "default, teachers online (random crops, or a cache over its budget)",
            "reference-app": "the reference app's algorithm"}


def write_table(path: Path, results: dict[str, dict], method: str, views: str) -> None:
    """The arms that ran, one row each: the table docs/benchmarks/speed.md renders."""
    names = arm_names(method, views)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["arm", "images/s", "peak RSS"])
        for arm, r in results.items():
            writer.writerow([names[arm], f"{r['images_per_s']:.1f}", f"{r['peak_rss_mb']:.0f} MiB"])


def summarise(results: dict[str, dict], n_train: int) -> dict:
    """Print the ratios against the issue's targets; return them with the raw figures."""
    ips = {arm: r["images_per_s"] for arm, r in results.items()}
    default = results["default"]
    online_epoch_s = n_train / ips["default-online"]
    ratios = {
        "default_over_ce": ips["default"] / ips["ce"],
        "default_over_reference_app": ips["default"] / ips["reference-app"],
        "default_online_over_ce": ips["default-online"] / ips["ce"],
        "default_online_over_reference_app": ips["default-online"] / ips["reference-app"],
        "ce_over_reference_app": ips["ce"] / ips["reference-app"],
        "mem_default_over_ce": default["peak_rss_mb"] / results["ce"]["peak_rss_mb"],
        "teacher_passes_per_image_view": default["teacher_passes_per_image_view"],
        "build_s_per_view_over_online_epoch_s":
            default["cache_build_s"] / default["cache_views"] / online_epoch_s,
    }
    for key, value in ratios.items():
        line = f"  {key:<38} {value:6.2f}"
        if key in TARGETS:
            op, bound = TARGETS[key]
            met = value >= bound if op == ">=" else value <= bound
            line += f"   target {op} {bound}: {'met' if met else 'NOT met'}"
        print(line)
    print(f"  cache: {default['cache_views']} views of {n_train} images built in "
          f"{default['cache_build_s']:.1f}s, "
          f"{default['cache_mb']:.1f} MiB on disk; an online epoch of the default method takes "
          f"{online_epoch_s:.1f}s")
    summary = {k: round(v, 3) for k, v in ratios.items()}
    for arm, r in results.items():
        name = arm.replace("-", "_")
        summary[f"images_per_s_{name}"] = round(r["images_per_s"], 1)
        summary[f"peak_rss_mb_{name}"] = round(r["peak_rss_mb"], 1)
    summary.update({"cache_build_s": default["cache_build_s"], "cache_mb": round(default["cache_mb"], 1),
                    "method": default["method"]})
    return summary


def main() -> None:
    from amalgam.distill.engine.views import AUGMENTATIONS
    from amalgam.distill.runs.recipes import LABELED_RECIPE

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer images and steps (minutes on 2 cores)")
    parser.add_argument("--steps", type=int, help="timed steps of the arms that run teachers per batch")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of each arm")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS),
                        help="run only these arms (the ratios need all four)")
    parser.add_argument("--teacher-precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="our arms' frozen teachers (the reference-app arm runs fp32, as that app does)")
    parser.add_argument("--augment", default=LABELED_RECIPE.values["augment"], choices=AUGMENTATIONS,
                        help="the ce and default arms' training views (default: the default recipe's); "
                        "the reference-app arm keeps that app's")
    parser.add_argument("--csv", type=Path, help="also write the arms' table here (docs/benchmarks/data/)")
    args = parser.parse_args()
    n_train = N_QUICK if args.quick else N_TRAIN
    heavy = args.steps or (8 if args.quick else n_train // BATCH)
    steps = {arm: (heavy if arm in HEAVY_ARMS else 6 * heavy) for arm in ARMS}

    from amalgam.distill.methods import DEFAULT_METHOD
    from amalgam.models.frozen import resolve_precision
    from amalgam.tasks.loader import channel_stats

    precision = resolve_precision(args.teacher_precision, torch.device("cpu"))
    results = {}
    with tempfile.TemporaryDirectory(prefix="amalgam-bench-") as tmp:
        workdir = Path(tmp)
        make_task_b_files(workdir, n_train)
        files = torch.load(workdir / "task_b_train.pt", weights_only=True)
        mean, std = channel_stats(to_task_space(files).images, 3)
        save_teachers(workdir, mean, std)
        print(f"Task-B layout: {n_train} train images {SIZE}x{SIZE}, 3 teachers ({TEACHER_ARCH}, 5 classes "
              f"each, ours in {precision}), student {STUDENT}, batch {BATCH}, "
              f"default method {DEFAULT_METHOD}, views {args.augment}; "
              f"{args.warmup} warm-up + timed steps {steps}; load average {load_average()}", flush=True)
        for arm in args.arms:
            r = results[arm] = run_arm(arm, workdir, steps[arm], args.warmup, args.teacher_precision,
                                       args.augment)
            build = f", cache built in {r['cache_build_s']:.1f}s (untimed)" if "cache_build_s" in r else ""
            print(f"  {arm:<15} {r['images_per_s']:8.1f} images/s   peak RSS {r['peak_rss_mb']:7.0f} MiB"
                  f"   ({r['threads']} threads{build})", flush=True)
    if args.csv is not None:
        write_table(args.csv, results, DEFAULT_METHOD, args.augment)
    if set(results) != set(ARMS):
        return
    summary = summarise(results, n_train)
    print(f"  load average now {load_average()} (other processes on the machine distort all figures)")
    summary.update({"train_images": n_train, "quick": args.quick, "timed_steps": steps,
                    "warmup_steps": args.warmup, "teacher_arch": TEACHER_ARCH,
                    "teacher_precision": precision, "augment": args.augment, "load_average": load_average()})
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
