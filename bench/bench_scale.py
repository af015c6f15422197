"""Cost against the number of classes C and teachers K: the default methods per epoch and at start-up.

Synthetic tasks, one per (C, K): 16x16 random images (a faint per-class tint), enough per class
that an epoch has at least `MIN_IMAGES` images (3 per class at C = 1000), and K randomly
initialised `cnn-small` teachers (timing does not need good teachers) whose rosters are windows
of about 1.2 C / K consecutive classes, each starting where the last one's first 1 / 1.2 ended:
every class is known, neighbouring teachers share some, as in the issue's measurements. The
student is the default one (mobilenetv3_small) at 32 px, batch 64, `--augment flip`.

Arms, each in a fresh spawned process so its peak resident memory (`ru_maxrss`) is its own:

    ce          plain cross-entropy, no teachers
    default     the labeled default recipe's method and options, teachers cached (both flip views, hint
                reductions), the cache built cold in the arm
    label-free  `fitnet+amalgam-kd --labels none --class-prior uniform`, likewise
    default-per-batch (only with --arms) the default with its targets combined per batch from the
                cached logits, as before they were computed once: what the memo saves

Per arm: the time of one epoch of training steps (validation left out; two untimed warm-up
steps first; the fastest of at least `MIN_EPOCHS` epochs and `MIN_TIMED_S` seconds), start-up
(teacher cache build, the combined targets computed once per image-view, the class prior's
fit), the cache's size on disk and the peak RSS. On the CPU, times are the arm's own CPU seconds
(`time.process_time`, one thread each), so that other processes sharing the machine do not move
the ratios; wall seconds are kept beside them (`*_wall_s`). On CUDA (`--device cuda`) all times
are wall seconds, synchronised.

`--startup-only N` instead measures start-up at N images (default 100,000) for C = 100, K = 10:
the combined targets (N x 2 views, and the class prior's N at T = 1) and `--target-neighbours 20`
on random teacher logits and random unit features of the teachers' width, run whole; the cache
build and one CE epoch, both linear in N, timed on a slice of `SLICE` images and scaled to N
(the `extrapolated` column says so).

    OMP_NUM_THREADS=1 nice -n 10 python bench/bench_scale.py --quick
    OMP_NUM_THREADS=1 nice -n 10 python bench/bench_scale.py --startup-only 100000

Writes docs/benchmarks/data/scale.csv (one row per arm and task; `--startup-only` rows are
replaced, grid rows kept, and the other way round) and docs/benchmarks/scale.png, and prints the
ratios the issue sets targets for. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
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

SIZE, STUDENT_SIZE, BATCH, TEACHER_ARCH, OVERLAP = 16, 32, 64, "cnn-small", 1.2
MIN_IMAGES, MIN_PER_CLASS = 600, 3
MIN_EPOCHS, MIN_TIMED_S = 3, 6.0  # timed epochs per arm: at least this many, and this many seconds
GRID = [(c, k) for c in (10, 100, 1000) for k in (3, 10, 30)]
QUICK_GRID = [(10, 3), (100, 10), (1000, 10)]
ARMS = ("ce", "default", "label-free")
ALL_ARMS = (*ARMS, "default-per-batch")  # the last on request: the memo off, for comparison
STARTUP_C, STARTUP_K, STARTUP_NEIGHBOURS, SLICE = 100, 10, 20, 2000
# the speed the project promises at scale, and over plain CE at C = 10
# and memory: the same bound as bench_train.py's default over CE
TARGETS = {"default_over_ce_c1000_k10": 1.5, "label_free_over_ce_c1000_k10": 1.5,
           "default_over_ce_c10": 1.15, "startup_over_ce_epoch_n100000": 2.0,  # c10: at K = 3
           "mem_default_over_ce_c1000_k10": 1.3, "mem_label_free_over_ce_c1000_k10": 1.3}
TARGET_WORDS = {
    "default_over_ce_c1000_k10": "C = 1000, K = 10: one epoch of the labeled default / one epoch of CE",
    "label_free_over_ce_c1000_k10": "C = 1000, K = 10: one epoch of the label-free default / one epoch of CE",
    "default_over_ce_c10": "C = 10, K = 3: one epoch of the labeled default / one epoch of CE",
    "startup_over_ce_epoch_n100000":
        "N = 100,000 images: start-up (cache, targets, prior, neighbours) / one CE epoch",
    "mem_default_over_ce_c1000_k10": "C = 1000, K = 10: peak RSS of the labeled default / CE's",
    "mem_label_free_over_ce_c1000_k10": "C = 1000, K = 10: peak RSS of the label-free default / CE's",
}
CSV_PATH = REPO / "docs" / "benchmarks" / "data" / "scale.csv"
PLOT_PATH = REPO / "docs" / "benchmarks" / "scale.png"
COLUMNS = ("mode", "device", "classes", "teachers", "images", "arm", "method", "epoch_s", "epoch_over_ce",
           "startup_s", "cache_s", "targets_s", "fit_s", "neighbours_s", "cache_mb", "peak_rss_mb",
           "epoch_wall_s", "startup_wall_s", "extrapolated")
BIG = 2**40  # a cache budget nothing here reaches


# --- the synthetic task ---------------------------------------------------------------------

def rosters(num_classes: int, num_teachers: int) -> list[list[int]]:
    """K windows of consecutive classes (wrapping), together covering all C, neighbours overlapping."""
    width = max(2, math.ceil(OVERLAP * num_classes / num_teachers))
    starts = [round(k * num_classes / num_teachers) for k in range(num_teachers)]
    return [sorted({(s + i) % num_classes for i in range(width)}) for s in starts]


def images_for(num_classes: int) -> int:
    return num_classes * max(MIN_PER_CLASS, math.ceil(MIN_IMAGES / num_classes))


def write_task(workdir: Path, num_classes: int, num_teachers: int, n_images: int) -> None:
    """Images and labels (a torch file) and the teachers' checkpoints under `workdir`."""
    from amalgam.models.checkpoint import ModelCard, save_checkpoint
    from amalgam.models.teacher_archs import create_teacher

    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(n_images) % num_classes
    tint = (labels[:, None, None, None] * 37 % 200).to(torch.uint8)
    images = torch.randint(0, 56, (n_images, 3, SIZE, SIZE), generator=gen, dtype=torch.uint8) + tint
    torch.save({"images": images, "labels": labels}, workdir / "train.pt")
    for k, roster in enumerate(rosters(num_classes, num_teachers)):
        torch.manual_seed(k)
        model = create_teacher(TEACHER_ARCH, len(roster))
        card = ModelCard(kind="teacher", arch=TEACHER_ARCH, classes=[f"c{c}" for c in roster], img_size=SIZE,
                         mean=[0.5] * 3, std=[0.25] * 3, task="scale")
        save_checkpoint(workdir / "teachers" / f"t{k}", model.state_dict(), card)


def load_task(workdir: Path, num_classes: int, num_teachers: int):
    from amalgam.tasks.images import ImageSet
    from amalgam.tasks.loader import TaskData, channel_stats
    from amalgam.tasks.spec import DataSpec, TaskSpec, TeacherSpec

    teachers = tuple(TeacherSpec(f"t{k}", tuple(f"c{c}" for c in roster), TEACHER_ARCH,
                                 str(workdir / "teachers" / f"t{k}"))
                     for k, roster in enumerate(rosters(num_classes, num_teachers)))
    spec = TaskSpec("scale", tuple(f"c{c}" for c in range(num_classes)), teachers, DataSpec("none"),
                    img_size=SIZE)
    saved = torch.load(workdir / "train.pt", weights_only=True)
    train = ImageSet(saved["images"], saved["labels"])
    mean, std = channel_stats(train.images, 3)
    val = train.subset(torch.arange(min(64, len(train))))
    return spec, TaskData(spec, train, val, val, mean, std)


# --- one arm, in its own process --------------------------------------------------------------

def clock_for(device: torch.device):
    """The arm's own CPU seconds on the CPU; synchronised wall seconds on CUDA."""
    if device.type == "cpu":
        return time.process_time

    def wall() -> float:
        torch.cuda.synchronize(device)
        return time.perf_counter()

    return wall


def timed_targets(clock):
    """Seconds spent computing the memoised targets (a timer around `memoised_targets`)."""
    import amalgam.distill.teachers.cache as cache_module

    spent = [0.0]
    original = cache_module.memoised_targets

    def memoised_targets(*args, **kwargs):
        started = clock()
        try:
            return original(*args, **kwargs)
        finally:
            spent[0] += clock() - started

    cache_module.memoised_targets = memoised_targets
    return spent


def without_memo() -> None:
    """The cache's teacher source without the method, so without its targets computed once."""
    import amalgam.distill.teachers.cache as cache_module

    original = cache_module.cached_teacher_source
    cache_module.cached_teacher_source = lambda cache, device, *args, **kwargs: original(cache, device)


def run_arm(arm: str, workdir: Path, num_classes: int, num_teachers: int, max_steps: int | None,
            device_name: str = "cpu") -> dict:
    from amalgam.distill.engine.batching import batch_indices, epoch_generator
    from amalgam.distill.engine.train_config import TrainConfig
    from amalgam.distill.engine.trainer import Trainer
    from amalgam.distill.methods import DEFAULT_METHOD, MethodOptions, build_method
    from amalgam.distill.runs.recipes import LABELED_RECIPE, recipe_method_options
    from amalgam.distill.runs.run import fit_to_training_set, setup_feature_method
    from amalgam.distill.teachers.cache import teacher_source_for
    from amalgam.distill.teachers.loading import load_ensemble
    from amalgam.models.model_input import ModelInput
    from amalgam.models.students import DEFAULT_STUDENT, create_student

    spec, data = load_task(workdir, num_classes, num_teachers)
    device = torch.device(device_name)
    clock = clock_for(device)
    name, options, labels = {
        "ce": ("ce", MethodOptions(), "train"),
        "default": (DEFAULT_METHOD, recipe_method_options(LABELED_RECIPE), "train"),
        "label-free": ("fitnet+amalgam-kd", MethodOptions(class_prior="uniform"), "none"),
        "default-per-batch": (DEFAULT_METHOD, recipe_method_options(LABELED_RECIPE), "train"),
    }[arm]
    if arm == "default-per-batch":
        without_memo()
    config = TrainConfig(batch_size=BATCH, augment="flip", quiet=True, labels=labels, device=device_name,
                         teacher_precision="fp32" if device.type == "cpu" else "auto")
    method = build_method(name, spec.roster(), options)
    model_input = ModelInput(STUDENT_SIZE, data.mean, data.std)
    torch.manual_seed(0)
    student = create_student(DEFAULT_STUDENT, spec.num_classes)
    result = {"method": name, "device": device.type, "startup_s": 0.0, "startup_wall_s": 0.0}
    source = None
    if method.uses_teachers:
        targets_spent = timed_targets(clock)
        started, started_wall = clock(), time.perf_counter()
        ensemble = load_ensemble(spec, device, workdir)
        map_size = setup_feature_method(method, student.to(device), model_input, ensemble, data, device)
        cache_dir = workdir / f"cache-{arm}"
        source = teacher_source_for(spec, data, method, config, ensemble, workdir, cache_dir, BIG, map_size)
        built = clock()
        fit_to_training_set(method, source, data, config, ensemble)
        result.update(startup_s=clock() - started, fit_s=clock() - built, targets_s=targets_spent[0],
                      cache_s=built - started - targets_spent[0],
                      startup_wall_s=time.perf_counter() - started_wall,
                      cache_mb=sum(f.stat().st_size for f in cache_dir.glob("*")) / 2**20)
    trainer = Trainer(student, method, model_input, data.train, data.val, spec.num_classes, config, source)
    trainer.student.train()
    generator = epoch_generator(config.seed, 0)
    for index in batch_indices(len(data.train), BATCH, generator)[:2]:  # warm-up, untimed
        trainer._step(index, generator, 0)
    batches = batch_indices(len(data.train), BATCH, epoch_generator(config.seed, 1))
    timed = batches[:max_steps] if max_steps else batches
    epochs = []  # (seconds, wall seconds) of each timed epoch; the least disturbed one is kept
    while len(epochs) < MIN_EPOCHS or sum(e[0] for e in epochs) < MIN_TIMED_S:
        started, started_wall = clock(), time.perf_counter()
        for step, index in enumerate(timed):
            trainer._step(index, generator, step)
        epochs.append((clock() - started, time.perf_counter() - started_wall))
    seconds, wall = min(epochs)
    result["epoch_s"] = seconds * len(batches) / len(timed)
    result["epoch_wall_s"] = wall * len(batches) / len(timed)
    result["extrapolated"] = "epoch" if len(timed) < len(batches) else ""
    return result


def arm_main(arm: str, workdir: str, num_classes: int, num_teachers: int, max_steps: int | None,
             device: str, queue) -> None:
    torch.set_num_threads(1)
    result = run_arm(arm, Path(workdir), num_classes, num_teachers, max_steps, device)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    queue.put(result)


# --- start-up at N images ---------------------------------------------------------------------

def startup_main(n_images: int, workdir: str, queue) -> None:
    """Targets and neighbours at N, run whole; cache build and a CE epoch on a slice, scaled."""
    from amalgam.distill.losses.neighbours import nearest_neighbours
    from amalgam.distill.methods import DEFAULT_METHOD, MethodOptions, build_method
    from amalgam.distill.teachers.cache import memoised_targets
    from amalgam.tasks.spec import DataSpec, TaskSpec, TeacherSpec

    torch.set_num_threads(1)
    path = Path(workdir)
    write_task(path, STARTUP_C, STARTUP_K, SLICE)
    sliced = {arm: run_arm(arm, path, STARTUP_C, STARTUP_K, None) for arm in ("ce", "default")}
    scale = n_images / SLICE
    roster_classes = rosters(STARTUP_C, STARTUP_K)
    teachers = tuple(TeacherSpec(f"t{k}", tuple(f"c{c}" for c in r)) for k, r in enumerate(roster_classes))
    classes = tuple(f"c{c}" for c in range(STARTUP_C))
    spec = TaskSpec("scale", classes, teachers, DataSpec("none"), img_size=SIZE)
    method = build_method(DEFAULT_METHOD, spec.roster(), MethodOptions())
    width = max(len(r) for r in roster_classes)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(n_images * 2, STARTUP_K, width, generator=gen) * 3  # both flip views
    started = time.process_time()
    memoised_targets(method, logits)
    targets_s = time.process_time() - started
    started = time.process_time()
    memoised_targets(build_method("amalgam-kd", spec.roster(), MethodOptions(temperature=1.0)),
                     logits[::2])  # the class prior's fit: the plain view at T = 1
    fit_s = time.process_time() - started
    features = torch.nn.functional.normalize(torch.randn(n_images, 128 * STARTUP_K, generator=gen), dim=1)
    started = time.process_time()
    nearest_neighbours(features, STARTUP_NEIGHBOURS)
    neighbours_s = time.process_time() - started
    cache_s = sliced["default"]["cache_s"] * scale
    queue.put({"images": n_images, "ce_epoch_s": sliced["ce"]["epoch_s"] * scale, "cache_s": cache_s,
               "targets_s": targets_s, "fit_s": fit_s, "neighbours_s": neighbours_s,
               "startup_s": cache_s + targets_s + fit_s + neighbours_s,
               "cache_mb": sliced["default"]["cache_mb"] * scale,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


# --- tables, plot, targets --------------------------------------------------------------------

def read_rows() -> list[dict]:
    if not CSV_PATH.exists():
        return []
    with open(CSV_PATH, newline="") as fh:
        return list(csv.DictReader(fh))


def write_rows(rows: list[dict]) -> None:
    CSV_PATH.parent.mkdir(parents=True, exist_ok=True)
    with open(CSV_PATH, "w", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in row.items()})


def merged(rows: list[dict], new_rows: list[dict]) -> list[dict]:
    """`rows` with the grid's tasks in `new_rows` replaced by them, sorted."""
    def task_arm(row: dict) -> tuple[str, str, str]:
        return str(row["classes"]), str(row["teachers"]), row["arm"]

    done = {task_arm(r) for r in new_rows}
    rows = [r for r in rows if r["mode"] != "grid" or task_arm(r) not in done]
    return sorted(rows + new_rows, key=lambda r: (r["mode"], int(r["classes"]), int(r["teachers"]),
                                                  ALL_ARMS.index(r["arm"]) if r["arm"] in ALL_ARMS else 0))


def plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = [r for r in rows if r["mode"] == "grid"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for arm, style in (("default", "-"), ("label-free", "--")):
        for k in sorted({int(r["teachers"]) for r in grid}):
            points = sorted((int(r["classes"]), float(r["epoch_over_ce"])) for r in grid
                            if r["arm"] == arm and int(r["teachers"]) == k and r["epoch_over_ce"])
            if points:
                left.plot(*zip(*points, strict=True), style, marker="o", label=f"{arm}, K={k}")
            points = sorted((int(r["classes"]), 1000 * float(r["startup_s"]) / int(r["images"])) for r in grid
                            if r["arm"] == arm and int(r["teachers"]) == k)
            if points:
                right.plot(*zip(*points, strict=True), style, marker="o", label=f"{arm}, K={k}")
    left.axhline(1.5, color="grey", lw=0.8, ls=":")
    left.set(xscale="log", xlabel="classes C", ylabel="epoch CPU time / CE epoch CPU time",
             title="per epoch (teachers cached)")
    right.set(xscale="log", yscale="log", xlabel="classes C", ylabel="seconds per 1,000 images",
              title="start-up: cache, targets, class prior")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(PLOT_PATH, dpi=120)


def ratios(rows: list[dict]) -> dict[str, float]:
    found = {}
    ce_rss = {(row["classes"], row["teachers"]): float(row["peak_rss_mb"]) for row in rows
              if row["mode"] == "grid" and row["arm"] == "ce" and row["peak_rss_mb"]}
    for row in rows:
        c, k, arm = int(row["classes"]), int(row["teachers"]), row["arm"]
        if row["mode"] == "startup":
            found[f"startup_over_ce_epoch_n{row['images']}"] = float(row["epoch_over_ce"])
        elif row["epoch_over_ce"] and arm != "ce":
            name = arm.replace("-", "_")
            if c == 1000 and k == 10:
                found[f"{name}_over_ce_c1000_k10"] = float(row["epoch_over_ce"])
                ce_peak = ce_rss.get((row["classes"], row["teachers"]))
                if ce_peak and row["peak_rss_mb"]:
                    found[f"mem_{name}_over_ce_c1000_k10"] = float(row["peak_rss_mb"]) / ce_peak
            if c == 10 and k == 3:  # the speed benchmark's setting: three teachers
                found[f"{name}_over_ce_c10"] = float(row["epoch_over_ce"])
            if c == 10:
                key = f"{name}_over_ce_c10_worst_k"
                found[key] = max(found.get(key, 0.0), float(row["epoch_over_ce"]))
    return found


def write_targets(found: dict[str, float]) -> None:
    """The targets beside what the table measured, as a data file the docs render."""
    with open(CSV_PATH.with_name("scale-targets.csv"), "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["ratio (epochs in CPU seconds, teachers cached)", "target", "measured", "verdict"])
        for key, bound in TARGETS.items():
            value = found.get(key)
            verdict = "not measured" if value is None else ("met" if value <= bound else "missed")
            shown = "" if value is None else f"{value:.2f}"
            writer.writerow([TARGET_WORDS[key], f"<= {bound}", shown, verdict])


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def main() -> None:
    global CSV_PATH, PLOT_PATH
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only (C, K) in {QUICK_GRID}")
    parser.add_argument("--grid", nargs="+", metavar="C,K", help="these (C, K) pairs, e.g. 100,10 1000,30")
    parser.add_argument("--max-steps", type=int, help="time this many steps per epoch and scale up")
    parser.add_argument("--startup-only", type=int, nargs="?", const=100_000, metavar="N",
                        help="measure start-up at N images (default 100000) instead of the grid")
    parser.add_argument("--report", action="store_true", help="measure nothing: plot, print the ratios")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (the grid only)")
    parser.add_argument("--arms", nargs="+", choices=ALL_ARMS, default=list(ARMS),
                        help="the grid's arms (ce always runs: the ratios need it)")
    parser.add_argument("--csv", type=Path, default=CSV_PATH, help="the table to update (a .png beside it)")
    args = parser.parse_args()
    if args.csv != CSV_PATH:
        CSV_PATH, PLOT_PATH = args.csv, args.csv.with_suffix(".png")
    print(f"load average at the start {load_average()}", flush=True)
    if args.report:
        pass
    elif args.startup_only:
        with tempfile.TemporaryDirectory(prefix="amalgam-scale-") as tmp:
            r = in_own_process(startup_main, args.startup_only, tmp)
        rows = [row for row in read_rows() if row["mode"] != "startup"]
        rows.append({"mode": "startup", "device": "cpu", "classes": STARTUP_C, "teachers": STARTUP_K,
                     "images": r["images"],
                     "arm": "default", "method": "fitnet+uhc-kd, class prior, neighbours 20",
                     "epoch_s": r["ce_epoch_s"], "epoch_over_ce": r["startup_s"] / r["ce_epoch_s"],
                     **{k: r[k] for k in ("startup_s", "cache_s", "targets_s", "fit_s", "neighbours_s",
                                          "cache_mb", "peak_rss_mb")},
                     "extrapolated": f"cache and CE epoch from {SLICE} images"})
        write_rows(rows)
        print(f"start-up at {r['images']} images: cache {r['cache_s']:.0f}s, targets {r['targets_s']:.0f}s, "
              f"class prior {r['fit_s']:.0f}s, neighbours {r['neighbours_s']:.0f}s; one CE epoch "
              f"{r['ce_epoch_s']:.0f}s", flush=True)
    else:
        pairs = ([tuple(int(x) for x in p.split(",")) for p in args.grid] if args.grid
                 else QUICK_GRID if args.quick else GRID)
        new_rows = []
        for c, k in pairs:
            n = images_for(c)
            with tempfile.TemporaryDirectory(prefix="amalgam-scale-") as tmp:
                write_task(Path(tmp), c, k, n)
                results = {arm: in_own_process(arm_main, arm, tmp, c, k, args.max_steps, args.device)
                           for arm in dict.fromkeys(["ce", *args.arms])}
            for arm, r in results.items():
                if arm not in args.arms:
                    continue  # ce timed for the ratio only: its row stays the one measured with the others
                row = {"mode": "grid", "classes": c, "teachers": k, "images": n, "arm": arm, **r,
                       "epoch_over_ce": r["epoch_s"] / results["ce"]["epoch_s"]}
                new_rows.append(row)
                print(f"C={c:<5} K={k:<3} N={n:<6} {arm:<11} epoch {r['epoch_s']:7.1f}s "
                      f"({row['epoch_over_ce']:.2f}x CE)  start-up {r['startup_s']:6.1f}s "
                      f"(targets {r.get('targets_s', 0):.1f}s)  RSS {r['peak_rss_mb']:.0f} MiB", flush=True)
            write_rows(merged(read_rows(), new_rows))  # after every task: a crash keeps what was measured
    plot(read_rows())
    found = ratios(read_rows())
    write_targets(found)
    for key, bound in TARGETS.items():
        value = found.get(key)
        verdict = "not measured" if value is None else ("met" if value <= bound else "NOT met")
        shown = "   -  " if value is None else f"{value:6.2f}"
        print(f"  {key:<34} {shown}   target <= {bound}: {verdict}")
    print(f"load average at the end {load_average()}")
    print(json.dumps({**{k: round(v, 3) for k, v in found.items()}, "load_average": load_average()}))


if __name__ == "__main__":
    main()
