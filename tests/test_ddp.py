"""torchrun with two CPU processes (gloo) running the default method through the real CLI.

Each rank runs this file as its script (see `__main__` below): the train.py front end, with
the trainer's steps recorded and the rank's final parameters dumped, so the test can check
what only a real two-process run shows: the ranks' weights stay identical (DDP's gradient
all-reduce for the student, `average_gradients` for the method's regressors) and the logged
training loss is summed over ranks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
DUMP_ENV = "AMALGAM_TEST_DDP_DUMP"
WORLD = 2


@pytest.fixture(scope="module")
def ddp_run(trained_home: Path, tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """One 1-epoch run of the default method (fitnet: a student and one regressor per teacher)."""
    base = tmp_path_factory.mktemp("ddp")
    run_dir, dumps = base / "run", base / "dumps"
    dumps.mkdir()
    env = {
        **os.environ,
        "AMALGAM_HOME": str(trained_home),
        "PYTHONWARNINGS": "ignore",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        DUMP_ENV: str(dumps),
    }
    # --standalone: torchrun picks a free port, so parallel test runs never collide
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(WORLD),
            __file__,
            "--task", "fashion-mini", "--train-per-class", "12", "--img-size", "32",
            "--student", "mobilenetv3_small", "--epochs", "1", "--batch-size", "16",
            "--device", "cpu", "--out", str(run_dir)]
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, dumps, result


@pytest.mark.e2e
def test_torchrun_two_processes_on_cpu(ddp_run):
    from amalgam.distill.engine.batching import predict_logits
    from amalgam.distill.methods import DEFAULT_METHOD
    from amalgam.harness.evaluate import load_student
    from amalgam.tasks.builtin import get_task
    from amalgam.tasks.loader import load_task_data

    run_dir, _, result = ddp_run
    assert result.stdout.count("best epoch 1 (chosen on validation)") == 1  # only rank 0 reports
    history = json.loads((run_dir / "history.json").read_text())
    assert len(history) == 1
    # the saved student, loaded in one process, scores exactly what the two ranks logged
    spec = get_task("fashion-mini")
    data = load_task_data(spec, train_per_class=12)
    student = load_student(run_dir / "best", spec.classes)
    logits = predict_logits(student.predict, student.model_input, data.val, torch.device("cpu"))
    accuracy = float((logits.argmax(1) == data.val.labels).float().mean())
    # ranks run with 1 thread, this process with more: only images whose top two logits
    # are within the kernels' rounding of each other may be classified differently
    top2 = logits.topk(2, dim=1).values
    near_tie = top2[:, 0] - top2[:, 1] <= 1e-4 * max(1.0, logits.abs().max().item())
    assert abs(accuracy - history[0]["val_acc"]) <= float(near_tie.sum()) / len(data.val) + 1e-12
    assert json.loads((run_dir / "config.json").read_text())["method"] == DEFAULT_METHOD


@pytest.mark.e2e
def test_ranks_hold_identical_weights_and_the_loss_is_summed_over_ranks(ddp_run):
    run_dir, dumps, _ = ddp_run
    ranks = [torch.load(dumps / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    assert ranks[0]["world"] == WORLD and ranks[0]["joined"]
    # the ranks trained on different shards, so equal weights can only come from the all-reduce
    assert ranks[0]["steps"] != ranks[1]["steps"]
    assert ranks[0]["method"], "fitnet's regressors should be trainable parameters"
    for part in ("student", "method"):
        assert ranks[0][part].keys() == ranks[1][part].keys()
        for name, weight in ranks[0][part].items():
            assert not torch.equal(weight, ranks[0]["initial"][part][name]), f"{part}.{name} never trained"
            # bit-identical: both ranks apply the same reduced gradient with the same optimiser
            assert torch.equal(weight, ranks[1][part][name]), f"{part}.{name} differs between ranks"
    steps = [step for rank in ranks for step in rank["steps"]]  # (loss × n, correct, n) per step
    seen = sum(n for _, _, n in steps)
    row = json.loads((run_dir / "history.json").read_text())[0]
    assert row["train_loss"] == pytest.approx(sum(loss for loss, _, _ in steps) / seen, rel=1e-9)
    assert row["train_acc"] == pytest.approx(sum(correct for _, correct, _ in steps) / seen, rel=1e-12)
    # rank 0 alone saw about half of the images: the logged numbers are not its own
    assert sum(n for _, _, n in ranks[0]["steps"]) < seen


def test_cuda_groups_carry_gloo_for_the_cpu_bookkeeping():
    """An nccl-only group refuses the CPU tensor `sum_across` reduces at every epoch end and the
    pickled objects `broadcast_from_main` sends (bench/gpu_check.sh runs them on a GPU)."""
    from amalgam.distill.engine.distributed import backend_for

    assert backend_for("cuda") == backend_for("cuda:1") == "cpu:gloo,cuda:nccl"
    assert backend_for("cpu") == "gloo"


def test_torchrun_with_one_process_still_joins_a_group(monkeypatch: pytest.MonkeyPatch):
    """So that a machine with one GPU can run the DDP code path (nccl refuses two ranks on one GPU)."""
    import socket

    import torch.distributed as dist

    from amalgam.distill.engine.distributed import barrier, broadcast_from_main, init_distributed, sum_across

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for name, value in {"TORCHELASTIC_RUN_ID": "test", "WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0",
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(name, value)
    env = init_distributed("cpu")
    try:
        assert env.active and env.world_size == 1 and dist.is_initialized()
        assert sum_across([1.5, 2.0], env) == [1.5, 2.0]
        assert broadcast_from_main({"run": "dir"}, env) == {"run": "dir"}
        barrier(env)
    finally:
        dist.destroy_process_group()
    monkeypatch.delenv("TORCHELASTIC_RUN_ID")  # a plain process with a stray WORLD_SIZE=1 stays alone
    assert not init_distributed("cpu").active and not dist.is_initialized()


def _run_rank() -> None:
    """One torchrun rank: train.py's front end, recording each step and dumping the weights."""
    import torch.distributed as dist

    from amalgam.cli.train_cli import main
    from amalgam.distill.engine.distributed import init_distributed
    from amalgam.distill.engine.trainer import Trainer

    seen: dict = {"steps": []}
    original_step = Trainer._step

    def snapshot(trainer: Trainer) -> dict:
        return {part: {name: p.detach().clone() for name, p in module.named_parameters()}
                for part, module in (("student", trainer.student), ("method", trainer.method))}

    def recording_step(trainer: Trainer, index, generator, step):
        if "trainer" not in seen:
            seen["trainer"], seen["initial"] = trainer, snapshot(trainer)
        batch_loss, batch_correct, *measures = original_step(trainer, index, generator, step)
        seen["steps"].append((batch_loss, batch_correct, len(index)))
        return batch_loss, batch_correct, *measures

    Trainer._step = recording_step
    sys.argv = [str(REPO / "train.py"), *sys.argv[1:]]
    env = init_distributed("cpu")  # joins the group main() then finds already made
    main()  # destroys the process group at the end
    dump = {**snapshot(seen["trainer"]), "initial": seen["initial"], "steps": seen["steps"],
            "world": env.world_size, "joined": env.joined}
    torch.save(dump, Path(os.environ[DUMP_ENV]) / f"rank{env.rank}.pt")
    assert not dist.is_initialized()


if __name__ == "__main__":
    _run_rank()
