"""amalgam as a library: in-memory teachers and Datasets through the CLI's own engine.

docs/api.md's example runs here (shrunk to a few images and one epoch); its run folder is then
exported and graded through the command line; each user mistake raises UserError with its
documented message; a teacher without 4-D activations trains a logit-only method.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from PIL import Image

import amalgam
import amalgam.api.run as api_run
from amalgam import UserError
from amalgam.api.data import to_image_set
from amalgam.distill.runs.recipes import LABEL_FREE_RECIPE, LABELED_RECIPE
from amalgam.distill.teachers.given import HookedTeacher, last_map_module, prepare_teacher
from tests.helpers.front_ends import REPO, assert_one_line_error, run_front_end

CLASSES = ["a", "b", "c", "d", "e", "f"]
TINY = {"student": "mobilenetv3_small", "epochs": 1, "batch_size": 8, "img_size": 32, "device": "cpu",
        "quiet": True}


def make_items(per_class: int, seed: int, size: int = 16) -> list[tuple[torch.Tensor, int]]:
    """A generated 6-class set: a class is a colour channel, brighter in the top half for d-f."""
    generator = torch.Generator().manual_seed(seed)
    items = []
    for label in range(len(CLASSES)):
        for _ in range(per_class):
            image = torch.rand(3, size, size, generator=generator) * 0.4
            image[label % 3] += 0.4
            if label >= 3:
                image[:, : size // 2] += 0.2
            items.append((image.clamp(0, 1), label))
    return items


def convnet(num_classes: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, num_classes))


def mlp(num_classes: int, size: int = 16) -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, num_classes))


def three_teachers(third: nn.Module | None = None) -> list[amalgam.Teacher]:
    return [amalgam.Teacher(convnet(3, 0), ["a", "b", "c"]), amalgam.Teacher(convnet(3, 1), ["c", "d", "e"]),
            amalgam.Teacher(third if third is not None else convnet(2, 2), ["e", "f"])]


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    """Runs, caches and reports under tmp_path, never in the repository."""
    monkeypatch.setattr(api_run, "PROJECT_ROOT", tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def labeled_run(tmp_path_factory) -> amalgam.DistilResult:
    root = tmp_path_factory.mktemp("labeled")
    return amalgam.distil(three_teachers(), CLASSES, make_items(4, 0), make_items(2, 1), out=root / "run",
                          root=root, **TINY)


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)


def test_the_docs_example_runs_labeled_and_label_free(home):
    code = "\n".join(python_blocks(REPO / "docs" / "api.md"))
    shrunk = re.sub(r"^IMAGES_PER_CLASS = \d+$", "IMAGES_PER_CLASS = 4", code, flags=re.M)
    shrunk = re.sub(r"^EPOCHS = \d+$", "EPOCHS = 1", shrunk, flags=re.M)
    assert shrunk.count("= 4\n") >= 1 and "EPOCHS = 1" in shrunk  # the page keeps its knobs
    namespace: dict = {}
    exec(compile(shrunk, "docs/api.md", "exec"), namespace)
    for name, labels in (("result", "train"), ("free", "none")):
        run = namespace[name]
        config = json.loads((run.run_dir / "config.json").read_text())
        assert config["task"] == "in-memory:in-memory" and config["train"]["labels"] == labels
        assert len(run.history) == 1 and (run.run_dir / "best.safetensors").is_file()
        assert not run.student.training
    assert namespace["result"].method == "fitnet+uhc-ka"  # hooked 4-D features serve the default
    assert namespace["free"].method == "fitnet+amalgam-kd"
    # with no method named, the CLI's recipes fill in what the example does not set
    for name, recipe in (("result", LABELED_RECIPE), ("free", LABEL_FREE_RECIPE)):
        options = json.loads((namespace[name].run_dir / "config.json").read_text())["method_options"]
        for key, value in recipe.values.items():
            if key in options:
                assert options[key] == value, (name, key)


@pytest.mark.e2e
def test_the_run_folder_exports_and_grades_through_the_cli(labeled_run, tmp_path):
    run_dir = labeled_run.run_dir
    done = run_front_end("train.py", ["export", str(run_dir), "--format", "torchscript", "--no-report"],
                         tmp_path)
    assert done.returncode == 0, done.stderr
    assert (run_dir / "student.pt").is_file()
    test_items = make_items(3, 7)
    task = write_folder_task(tmp_path / "task", test_items)
    grade = ["--task", str(task), "--checkpoint", str(run_dir / "best"),
             "--out", str(tmp_path / "evaluation"), "--device", "cpu"]
    done = run_front_end("evaluation.py", grade, tmp_path)
    assert done.returncode == 0, done.stderr
    graded = json.loads(next((tmp_path / "evaluation").rglob("results.json")).read_text())
    ours = amalgam.evaluate(run_dir, test_items, CLASSES, device="cpu")
    # one scoring path: the CLI's numbers on the test folder are the library's on the same images
    assert graded["n_samples"] == ours["n_samples"] == 18
    assert abs(graded["overall_accuracy"] / 100 - ours["accuracy"]) < 1e-4
    assert abs(graded["nll"] - ours["nll"]) < 1e-4 and abs(graded["ece"] - ours["ece"]) < 1e-4
    exported = amalgam.evaluate(run_dir / "student.pt", test_items, CLASSES, device="cpu")
    assert abs(exported["nll"] - ours["nll"]) < 1e-3


def write_folder_task(folder: Path, items) -> Path:
    for split in ("train", "test"):
        for i, (image, label) in enumerate(items):
            path = folder / split / CLASSES[label] / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.mul(255).round().byte().permute(1, 2, 0).numpy()).save(path)
    task = folder / "task.toml"
    task.write_text(f'name = "api-colours"\nclasses = {json.dumps(CLASSES)}\nimg_size = 16\n'
                    '[[teacher]]\nname = "all"\nclasses = ' + json.dumps(CLASSES) + "\n"
                    '[data]\nkind = "folder"\ntrain = "train"\ntest = "test"\n')
    return task


def test_evaluate_writes_the_report_folder_and_agrees_with_the_result(labeled_run, tmp_path):
    items = make_items(2, 1)
    scores = amalgam.evaluate(labeled_run, items, CLASSES, out=tmp_path / "report", device="cpu")
    assert (tmp_path / "report" / "results.json").is_file()
    assert (tmp_path / "report" / "confusion_matrix.png").is_file()
    # the validation set is these images, so the run's chosen-epoch scores are these
    assert abs(scores["accuracy"] - labeled_run.val_acc) < 1e-4
    assert set(scores) >= {"accuracy", "macro_f1", "nll", "ece"}


@pytest.mark.e2e
def test_a_stopped_run_resumes_from_python_and_the_cli_says_how(tmp_path):
    items, val = make_items(4, 0), make_items(2, 1)
    first = amalgam.distil(three_teachers(), CLASSES, items, val, out=tmp_path / "run", **TINY)
    done = run_front_end("train.py", ["--resume", str(first.run_dir)], tmp_path)
    assert_one_line_error(done, "were given in Python", "resume=RUN_DIR")
    more = amalgam.distil(three_teachers(), CLASSES, items, val, resume=first.run_dir, epochs=2, quiet=True)
    assert [row["epoch"] for row in more.history] == [1, 2]
    assert json.loads((first.run_dir / "config.json").read_text())["train"]["epochs"] == 2
    with pytest.raises(UserError, match=r"only epochs and quiet may change, not \['lr'\]"):
        amalgam.distil(three_teachers(), CLASSES, items, val, resume=first.run_dir, lr=0.5)
    with pytest.raises(UserError, match="not .*'s: it was trained from"):
        other = [amalgam.Teacher(convnet(3, 0), ["a", "b", "c"]),
                 amalgam.Teacher(convnet(4, 1), ["c", "d", "e", "f"])]
        amalgam.distil(other, CLASSES, items, val, resume=first.run_dir, epochs=3)


@pytest.mark.parametrize("case, message", [
    ("width", "teacher 'teacher_1' outputs 4 logits but lists 3 classes; list its classes in the order of "
              "its outputs"),
    ("class", "teacher 'teacher_3' names class(es) ['z'] that are not in classes"),
    ("no labels", "the train Dataset yields images without labels, but labels='train' trains on them"),
    ("student", "unknown student 'not_a_net'"),
    ("label", "item 0 of the train Dataset has label 9, not an index into the 6 classes"),
    ("option", "unknown option(s) ['learning_rate']"),
    ("task", "task='../x' is not a plain name"),
])
def test_each_user_mistake_raises_user_error_with_its_message(case, message):
    teachers, train, kwargs = three_teachers(), make_items(2, 0), dict(TINY)
    if case == "width":
        teachers[0] = amalgam.Teacher(convnet(4, 0), ["a", "b", "c"])
    elif case == "class":
        teachers[2] = amalgam.Teacher(convnet(2, 2), ["e", "z"])
    elif case == "no labels":
        train = [image for image, _ in train]
    elif case == "student":
        kwargs["student"] = "not_a_net"
    elif case == "label":
        train = [(train[0][0], 9), *train[1:]]
    elif case == "option":
        kwargs["learning_rate"] = 0.1
    else:
        kwargs["task"] = "../x"
    with pytest.raises(UserError) as raised:
        amalgam.distil(teachers, CLASSES, train, make_items(1, 1), **kwargs)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_teacher_without_feature_maps_trains_logit_only_with_one_line(capsys, tmp_path):
    run = amalgam.distil(three_teachers(mlp(2)), CLASSES, make_items(3, 0), make_items(1, 1),
                         out=tmp_path / "run", **TINY)
    assert run.method == "uhc-kd" and len(run.history) == 1
    notes = [line for line in capsys.readouterr().out.splitlines() if "4-D activation" in line]
    assert notes == ["note: teacher(s) ['teacher_3'] have no 4-D activation to read features from; "
                     "training uhc-kd, a logit-only method"]


@pytest.mark.parametrize("method, third, message", [
    ("fitnet", "mlp", "method 'fitnet' reads the teachers' feature maps, but teacher(s) ['teacher_3'] "
                      "have no 4-D activation; use a logit-only method"),
    ("simkd", None, "method 'simkd' reuses each teacher's classifier on the student's features, but "
                    "teacher(s) ['teacher_1', 'teacher_2', 'teacher_3'] have no "
                    "forward_features/forward_head"),
])
def test_methods_a_teacher_cannot_serve_are_refused_before_training(method, third, message, tmp_path):
    teachers = three_teachers(mlp(2) if third == "mlp" else None)
    with pytest.raises(UserError) as raised:
        amalgam.distil(teachers, CLASSES, make_items(2, 0), make_items(1, 1), method=method,
                       out=tmp_path / "run", **TINY)
    assert message in str(raised.value)
    assert not (tmp_path / "run").exists()


def test_hooked_features_are_the_last_4d_activation_and_the_head_finishes_that_pass():
    module = convnet(3, 0).eval()
    x = torch.rand(2, 3, 16, 16)
    # the ReLU after the conv: its map, not the later pooled [B, 8, 1, 1] (timm's forward_features)
    assert last_map_module(module, x) == "1"
    assert last_map_module(nn.Sequential(nn.Conv2d(3, 4, 16), nn.Flatten()), x) == "0"  # only 1 x 1: that one
    assert last_map_module(mlp(2), x) is None
    hooked = HookedTeacher(module, last_map_module(module, x), "t")
    features = hooked.forward_features(x)
    assert features.shape == (2, 8, 16, 16)
    torch.testing.assert_close(hooked.forward_head(features), module(x), atol=1e-6, rtol=0)
    with pytest.raises(UserError, match="has no forward_head of its own"):
        hooked.forward_head(features.clone())


class TimmLike(nn.Module):
    """A teacher with timm's split: used as it is, its head reusable on other features (SimKD)."""

    def __init__(self):
        super().__init__()
        self.body, self.head = nn.Conv2d(3, 4, 3), nn.Linear(4, 2)

    def forward_features(self, x):
        return self.body(x)

    def forward_head(self, x, pre_logits=False):
        return self.head(x.mean((2, 3)))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def test_a_teacher_with_timms_split_is_used_as_it_is():
    teacher = TimmLike()
    assert prepare_teacher(teacher, "t", torch.rand(2, 3, 8, 8)) == (teacher, True, True)
    assert prepare_teacher(mlp(2, 8), "t", torch.rand(2, 3, 8, 8))[1:] == (False, False)


class FakeHFDataset:
    """The part of a Hugging Face `datasets.Dataset` the adapter reads (the package is not
    installed here): `features` with an Image and a ClassLabel column, `column_names`, dict rows."""

    class Image:
        pass

    class ClassLabel:
        def __init__(self, names):
            self.names = names

    def __init__(self, rows, names):
        self.rows = rows
        self.features = {"img": self.Image(), "fine_label": self.ClassLabel(names)}
        self.column_names = ["img", "fine_label"]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def test_a_hugging_face_style_dataset_is_read_by_its_columns_and_class_names():
    pil = Image.new("RGB", (16, 16), (255, 0, 0))
    grey = Image.new("L", (8, 8), 128)  # another size and mode: resized to the first, repeated to RGB
    dataset = FakeHFDataset([{"img": pil, "fine_label": 0}, {"img": grey, "fine_label": 1}], ["f", "b"])
    images = to_image_set(dataset, CLASSES, "train", True)
    assert images.images.shape == (2, 3, 16, 16) and images.images.dtype == torch.uint8
    assert images.labels.tolist() == [5, 1]  # ClassLabel names matched to `classes`
    assert images.images[0, 0].min() == 255 and int(images.images[1, 1, 4, 4]) == 128


def test_images_alone_are_unlabeled_and_normalised_tensors_are_refused():
    images = to_image_set([torch.rand(3, 8, 8) for _ in range(3)], CLASSES, "train", False)
    assert images.labels.tolist() == [-1, -1, -1]
    with pytest.raises(UserError, match=r"not \[0, 1\]; drop Normalize"):
        to_image_set([(torch.randn(3, 8, 8) * 3, 0)], CLASSES, "train", True)
