"""The CAS771 reference app's teacher files under weights/<A|B>/ are the built-in tasks' teachers
when present: matched by pattern, named when used, refused in one line when ambiguous or damaged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import amalgam
from amalgam.distill.teachers.loading import load_teachers
from amalgam.distill.teachers.training import teachers_to_train
from amalgam.errors import UserError
from amalgam.models.cas771_format import Cas771TeacherCNN
from amalgam.tasks.builtin import builtin_tasks, get_task
from amalgam.tasks.spec import CAS771_FORMAT
from tests.helpers.front_ends import run_front_end
from tests.helpers.task_files import write_task_b

# the reference app's own names for task B's teachers; accuracy and epoch vary between trainings
B_FILES = ("data1_86.40_epoch182.pth", "data2_92.80_epoch93.pth", "data3_79.60_epoch128.pth")


def write_teacher(path: Path, seed: int) -> dict[str, torch.Tensor]:
    """A random reference-app teacher CNN (5 classes), saved as the bare state_dict it saved."""
    torch.manual_seed(seed)
    model = Cas771TeacherCNN(5)
    for module in model.modules():  # non-trivial BatchNorm statistics: a mix-up would show
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.state_dict()


@pytest.fixture
def home(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setattr(amalgam, "PROJECT_ROOT", tmp_path)
    return tmp_path


def test_files_are_found_by_pattern_and_mapped_to_their_teacher(home: Path):
    states = {k: write_teacher(home / "weights" / "B" / name, seed=k) for k, name in enumerate(B_FILES, 1)}
    spec = get_task("B")
    assert [t.format for t in spec.teachers] == [CAS771_FORMAT] * 3
    assert [Path(t.checkpoint) for t in spec.teachers] == [home / "weights" / "B" / n for n in B_FILES]
    assert get_task("TaskB").teachers == spec.teachers  # every spelling of the task
    assert teachers_to_train(spec, home) == []  # `train.py teachers --task B` has nothing to do
    stats = ((0.4, 0.45, 0.5), (0.2, 0.25, 0.3))
    models, inputs, _ = load_teachers(spec, home, stats)
    for k, (model, model_input) in enumerate(zip(models, inputs, strict=True), start=1):
        assert all(torch.equal(model.state_dict()[key], value) for key, value in states[k].items())
        assert model_input.img_size == 64 and (tuple(model_input.mean), tuple(model_input.std)) == stats


def test_the_message_names_each_file_used(home: Path, capsys):
    write_teacher(home / "weights" / "B" / B_FILES[0], seed=1)  # only teacher 1 has a file
    spec = get_task("B")
    assert [t.format for t in spec.teachers] == [CAS771_FORMAT, "amalgam", "amalgam"]
    assert spec.teachers[1:] == builtin_tasks()["B"].teachers[1:]  # the others: our own checkpoints
    assert [t.name for t in teachers_to_train(spec, home)] == ["teacher_2", "teacher_3"]
    with pytest.raises(UserError, match="teacher_2"):  # teacher 2 is still untrained
        load_teachers(spec, home)
    out = capsys.readouterr().out
    assert f"teacher_1: the CAS771 reference teacher {home / 'weights' / 'B' / B_FILES[0]}" in out


def test_without_weights_the_task_is_unchanged(home: Path):
    (home / "weights" / "B").mkdir(parents=True)
    (home / "weights" / "B" / "notes.txt").write_text("not a teacher")
    assert get_task("B") == builtin_tasks()["B"]
    write_teacher(home / "weights" / "A" / "data1_73.60_epoch151.pth", seed=1)
    assert get_task("B") == builtin_tasks()["B"]  # A's files are A's
    assert get_task("A").teachers[0].format == CAS771_FORMAT
    assert get_task("fashion-mini") == builtin_tasks()["fashion-mini"]


def test_two_files_for_one_teacher_is_a_one_line_error_naming_both(home: Path):
    write_teacher(home / "weights" / "A" / "data3_87.80_epoch184.pth", seed=3)
    write_teacher(home / "weights" / "A" / "data3_85.00_epoch90.pth", seed=4)
    with pytest.raises(UserError) as error:
        get_task("A")
    message = str(error.value)
    assert "data3_85.00_epoch90.pth" in message and "data3_87.80_epoch184.pth" in message
    assert "teacher 3" in message and "\n" not in message


def test_a_damaged_file_is_a_one_line_error_naming_it(home: Path):
    for k, name in enumerate(B_FILES, start=1):
        write_teacher(home / "weights" / "B" / name, seed=k)
    damaged = home / "weights" / "B" / B_FILES[2]
    damaged.write_bytes(damaged.read_bytes()[:5000])  # a download cut short
    with pytest.raises(UserError) as error:
        load_teachers(get_task("B"), home)
    assert str(damaged) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.e2e
def test_train_uses_them_with_no_teacher_training(tmp_path: Path):
    """`train.py --task B` on a home with data and weights/B only: no `train.py teachers` first."""
    write_task_b(tmp_path)
    for k, name in enumerate(B_FILES, start=1):
        write_teacher(tmp_path / "weights" / "B" / name, seed=k)
    args = ["--task", "B", "--method", "kd", "--epochs", "1", "--batch-size", "16", "--img-size", "32",
            "--quiet", "--out", str(tmp_path / "run")]
    result = run_front_end("train.py", args, tmp_path)
    assert result.returncode == 0, result.stderr
    for k, name in enumerate(B_FILES, start=1):
        used = f"teacher_{k}: the CAS771 reference teacher {tmp_path / 'weights' / 'B' / name}"
        assert used in result.stdout
    assert (tmp_path / "run" / "best.safetensors").is_file()
    assert not (tmp_path / "checkpoints").exists()
