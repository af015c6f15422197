#!/usr/bin/env bash
# Run every CUDA code path once, on the tiny embedded task, in a few minutes:
#
#   bash bench/gpu_check.sh            # from anywhere; PYTHON=/path/to/python to choose one
#
# Prints `PASS <path>` or `FAIL <path>: <last error line>` per path, then a summary, and exits
# non-zero if any path failed. Nothing is written outside a temporary AMALGAM_HOME (kept, and
# named at the end, when something failed). The code under test is this checkout's (PYTHONPATH);
# nothing is installed unless a dependency is missing.
#
# Paths:
#   speedups      Trainer on cuda: student in channels_last, forward under bf16 autocast, one epoch
#   teachers      `train.py teachers` on cuda (the others distil from them)
#   cuda          `train.py` distillation on cuda (bf16 autocast, channels_last; fp32 teachers)
#   compile       the same with `--compile`
#   bf16-teachers the same with `--teacher-precision bf16`, teachers run online every step
#   ddp-nccl      torchrun, one process: the group is `cpu:gloo,cuda:nccl`; sum_across,
#                 broadcast_from_main and barrier (gloo) and DDP's and average_gradients'
#                 all-reduces of CUDA gradients (nccl), checked one by one
#   ddp-train     torchrun, one process: `train.py` through the DDP code path on cuda
#   evaluation    `evaluation.py` on the `cuda` run
#   scale         bench/bench_scale.py on cuda at (C, K) = (10, 3) and (1000, 10): per-epoch time of
#                 CE and the two defaults, teachers cached; its table goes to
#                 docs/benchmarks/data/scale-gpu.csv (SCALE_CSV=... elsewhere), its plot beside it
# NCCL refuses two ranks on one GPU, so a one-GPU machine checks DDP with a world of one:
# torchrun with --nproc-per-node 1 still joins a process group (amalgam/distill/distributed.py),
# so every collective really goes through nccl or gloo. Two-rank semantics (identical weights,
# summed losses) are checked on CPU by tests/test_ddp.py.
set -u

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET:-330}  # seconds for all paths together (the whole check: under 6 minutes)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/amalgam-gpu-check.XXXXXX")
RUNS=$WORK/home/runs
export AMALGAM_HOME=$WORK/home PYTHONWARNINGS=ignore PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export REPO PY RUNS WORK
mkdir -p "$WORK/logs" "$RUNS"
cd "$REPO" || exit 1

TINY="--task fashion-mini --train-per-class 12 --img-size 32 --quiet"
STUDENT="--student mobilenetv3_small --epochs 1 --batch-size 16 --device cuda"
export TINY STUDENT

STARTED=$SECONDS
RESULTS=()
FAILED=0

last_error() {  # the last line naming an error; torchrun's own ChildFailedError report is skipped
    local line
    line=$(grep -E '^(\[rank[0-9]+\]: )?([A-Za-z_][A-Za-z0-9_.]*(Error|Exception)\b|error: |FAIL )' "$1" |
        grep -v ChildFailedError | tail -n 1)
    [[ -n $line ]] || line=$(grep -v '^[[:space:]]*$' "$1" | tail -n 1)
    echo "$line"
}

check() {  # check NAME LIMIT_S FUNCTION: run FUNCTION in its own bash with a time limit
    local name=$1 limit=$2 func=$3 left rc last began=$SECONDS
    left=$((BUDGET - (SECONDS - STARTED)))
    if ((left < 15)); then
        last="skipped: the ${BUDGET}s budget is spent"
        rc=1
    else
        ((limit > left)) && limit=$left
        timeout --kill-after=10 "$limit" bash -c "$func" >"$WORK/logs/$name.log" 2>&1
        rc=$?
        last=$(last_error "$WORK/logs/$name.log")
        ((rc == 124 || rc == 137)) && last="timed out after ${limit}s (log: $WORK/logs/$name.log)"
    fi
    if ((rc == 0)); then
        RESULTS+=("PASS $name ($((SECONDS - began))s)")
    else
        RESULTS+=("FAIL $name: ${last:-exit code $rc}")
        FAILED=$((FAILED + 1))
    fi
    echo "${RESULTS[-1]}"
}

fail() { echo "$*" >&2; exit 1; }
export -f fail

# --- setup: a CUDA torch and the light dependencies (installed only if missing) --------------
# torch itself is never installed or replaced: it must come with the machine (PYTHON=... picks
# another interpreter); a missing light dependency is installed with torch pinned to its version.
if ! torch_version=$("$PY" -c "import torch; print(torch.__version__.split('+')[0])" 2>&1); then
    echo "FAIL setup: $PY cannot import torch ($(echo "$torch_version" | tail -n 1)); set PYTHON"
    exit 1
fi
DEPS="timm typer rich PIL matplotlib torchmetrics safetensors numpy"
missing=$("$PY" - "$DEPS" <<'EOF'
import importlib.util, sys
print(" ".join(m for m in sys.argv[1].split() if importlib.util.find_spec(m) is None))
EOF
)
if [[ -n $missing ]]; then
    pip_names=$(echo "$missing" | sed 's/\bPIL\b/pillow/')
    echo "installing missing dependencies: $pip_names (torch stays $torch_version)"
    echo "torch==$torch_version" >"$WORK/constraints.txt"
    timeout 120 "$PY" -m pip install --quiet --disable-pip-version-check -c "$WORK/constraints.txt" \
        $pip_names >"$WORK/logs/pip.log" 2>&1
fi
if ! cuda=$("$PY" -c "import torch, timm, typer, rich, PIL, matplotlib, torchmetrics, safetensors, amalgam
assert torch.cuda.is_available(), 'torch sees no CUDA device'
print(torch.__version__, torch.cuda.get_device_name(0))" 2>&1); then
    echo "FAIL setup: $(echo "$cuda" | tail -n 1)"
    exit 1
fi
echo "setup: torch $cuda; python $("$PY" -c 'import sys; print(sys.version.split()[0])'); home $AMALGAM_HOME"

# --- the paths ---------------------------------------------------------------------------------
speedups() {
    "$PY" - <<'EOF'
import math
import torch
from amalgam.distill.methods import MethodOptions, build_method
from amalgam.distill.engine.trainer import TrainConfig, Trainer
from amalgam.distill.engine.views import to_unit_float
from amalgam.models.model_input import ModelInput
from amalgam.models.students import create_student
from amalgam.tasks.builtin import get_task
from amalgam.tasks.loader import load_task_data

spec = get_task("fashion-mini")
data = load_task_data(spec, train_per_class=12)
model_input = ModelInput(32, data.mean, data.std)
config = TrainConfig(epochs=1, batch_size=16, device="cuda", quiet=True)
trainer = Trainer(create_student("mobilenetv3_small", spec.num_classes),
                  build_method("ce", spec.roster(), MethodOptions()), model_input,
                  data.train, data.val, spec.num_classes, config)
assert trainer.channels_last, "channels_last is off on cuda"
convs = [p for p in trainer.student.parameters() if p.dim() == 4]
assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convs), "student not channels_last"
x = model_input(to_unit_float(data.train.images[:4], trainer.device))
with trainer._autocast():
    dtype = trainer.forward_model(x).dtype
assert dtype == torch.bfloat16, f"autocast gave {dtype}, not bf16"
row = trainer.train_epoch()
assert math.isfinite(row["train_loss"]), row
print("ok", row)
EOF
}

teachers() { "$PY" train.py teachers $TINY --epochs 1 --batch-size 16 --device cuda; }

distil() {  # distil RUN_NAME EXTRA_FLAGS...: one run, then check it wrote a model and a history
    local out=$RUNS/$1
    shift
    "$PY" train.py $TINY $STUDENT --out "$out" "$@" || return 1
    [[ -s $out/best.safetensors && -s $out/history.json ]] || fail "$out has no best.safetensors or history.json"
}

cuda() { distil cuda --teacher-precision fp32; }
compiled() { distil compile --teacher-precision fp32 --compile; }
bf16_teachers() {
    distil bf16 --teacher-precision bf16 || return 1
    grep -q '"teacher_precision": "bf16"' "$RUNS/bf16/config.json" || fail "config.json does not say bf16"
}

ddp_nccl() {
    cat >"$WORK/ddp_check.py" <<'EOF'
import torch
import torch.distributed as dist
from amalgam.distill.engine.distributed import (average_gradients, barrier, broadcast_from_main,
                                         cuda_device_for, init_distributed, sum_across)

env = init_distributed("cuda")
assert env.active and env.world_size == 1, f"no process group joined: {env}"
backend = str(dist.get_backend())
assert "nccl" in backend, f"backend {backend} has no nccl"
device = torch.device(cuda_device_for("cuda", env))
assert torch.cuda.current_device() == device.index, "current CUDA device not set"
assert sum_across([1.5, 2.0, 3.0], env) == [1.5, 2.0, 3.0]  # a CPU tensor: refused by nccl alone
assert broadcast_from_main({"run": "dir"}, env) == {"run": "dir"}
barrier(env)
layer = torch.nn.Linear(4, 2).to(device)
ddp = torch.nn.parallel.DistributedDataParallel(layer, device_ids=[device.index])
ddp(torch.randn(8, 4, device=device)).sum().backward()  # DDP's bucketed all-reduce
helper = torch.nn.Parameter(torch.ones(3, device=device))
(2 * helper).sum().backward()
average_gradients([helper], env)  # the method helpers' all-reduce
assert torch.equal(helper.grad, torch.full((3,), 2.0, device=device)), helper.grad
torch.cuda.synchronize()
dist.destroy_process_group()
print(f"ok: backend {backend}, nccl {torch.cuda.nccl.version()}")
EOF
    "$PY" -m torch.distributed.run --standalone --nproc-per-node 1 "$WORK/ddp_check.py"
}

ddp_train() {
    local out=$RUNS/ddp
    "$PY" -m torch.distributed.run --standalone --nproc-per-node 1 train.py $TINY $STUDENT --out "$out" ||
        return 1
    [[ -s $out/best.safetensors ]] || fail "$out has no best.safetensors"
}

evaluation() {
    [[ -s $RUNS/cuda/best.safetensors ]] || fail "no trained run to evaluate (the cuda path failed)"
    "$PY" evaluation.py --task fashion-mini --checkpoint "$RUNS/cuda/best" --device cuda \
        --out "$WORK/evaluation" --quiet || return 1
    [[ -n $(find "$WORK/evaluation" -name results.json) ]] || fail "no results.json under $WORK/evaluation"
}

scale() {
    local table=${SCALE_CSV:-$REPO/docs/benchmarks/data/scale-gpu.csv}
    "$PY" bench/bench_scale.py --grid 10,3 1000,10 --device cuda --csv "$table" || return 1
    [[ -s $table ]] || fail "bench_scale.py wrote no $table"
}

export -f speedups teachers distil cuda compiled bf16_teachers ddp_nccl ddp_train evaluation scale

check speedups 90 speedups
check teachers 90 teachers
check cuda 90 cuda
check compile 180 compiled
check bf16-teachers 90 bf16_teachers
check ddp-nccl 90 ddp_nccl
check ddp-train 120 ddp_train
check evaluation 60 evaluation
check scale 120 scale

# --- summary -----------------------------------------------------------------------------------
echo "summary: $((${#RESULTS[@]} - FAILED)) of ${#RESULTS[@]} paths passed in $((SECONDS - STARTED))s"
printf '  %s\n' "${RESULTS[@]}"
if ((FAILED)); then
    echo "logs: $WORK/logs"
    exit 1
fi
rm -rf "$WORK"
