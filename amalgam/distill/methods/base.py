"""What every distillation method provides to the trainer (mdistiller's shape, typed options)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn as nn

from amalgam.distill.losses.features import HintTarget
from amalgam.distill.option_fields import (
    ABOVE_0,
    AT_LEAST_0,
    AT_LEAST_1,
    METHOD_PANEL,
    Range,
    check_fields,
    option_field,
)
from amalgam.tasks.spec import Roster

# Rows per `teacher_targets` call over many images (the teacher cache's memo, a start-up fit):
# UHC's Newton step keeps about ten float64 [B, K, L] and [B, C] tensors alive, so a block of
# 2^20 such entries peaks near 80 MiB. 2^25 peaked near 750 MiB above CE at C = 1000, K = 10 (a
# peak RSS 1.7x CE's in bench/bench_scale.py) and was slower: blocks past the CPU's caches.
TARGET_BLOCK_ENTRIES = 2**20
TEACHER_FILTERS = ("none", "covering", "correct")
TEACHER_TRUSTS = ("fixed", "per-class")
CLASS_PRIORS = ("none", "uniform", "labels")
TARGET_GATES = ("teachers", "student")


def _option(default, help: str, *aliases: str, **bounds):
    """A MethodOptions field: `train.py` and `train.py compare` offer it as --<name-with-dashes>
    (plus `aliases`) with this default and help (amalgam/cli/field_flags.py), and `bounds` (range
    or choices) are checked when the options are built."""
    return option_field(default, help, *aliases, panel=METHOD_PANEL, **bounds)


@dataclass(frozen=True)
class MethodOptions:
    """All methods' hyper-parameters, each with the literature's default; recorded in config.json.

    A new field is a new command-line flag of `train.py` and `train.py compare`; nothing else to edit.
    """

    temperature: float = _option(4.0, "softening temperature T > 0", "-T", range=ABOVE_0)
    alpha: float = _option(0.5, "weight of the distillation term in [0, 1]; 0 = CE",
                           range=Range(low=0, high=1))
    dkd_alpha: float = _option(1.0, "DKD weight of the target-class term", range=AT_LEAST_0)
    dkd_beta: float = _option(8.0, "DKD weight of the non-target term", range=AT_LEAST_0)
    # On validation roster fashion-roster100 a 5-epoch ramp lifted DKD from 73.7 to 76.8 % (README)
    dkd_warmup: float = _option(5.0, "epochs over which DKD's terms ramp up from 0 (mdistiller: 20 of 240)",
                                range=AT_LEAST_0)
    # FitNet's hint weight on the normalised hint loss: the old weight 10 on the raw MSE of the
    # `fashion` teachers (mean square ~1.4) carried over (README, "Choosing defaults")
    hint_weight: float = _option(15.0, "weight of FitNet's normalised hint loss (fitnet, fitnet+*)",
                                 range=AT_LEAST_0)
    simkd_weight: float = _option(1.0, "weight of SimKD's feature loss", range=AT_LEAST_0)
    simkd_ratio: int = _option(2, "SimKD projector bottleneck ratio r", range=AT_LEAST_1)
    confidence_weighting: bool = _option(False, "partial-kd: weight teachers by their confidence")
    cfl_weight: float = _option(10.0, "cfl: weight w of its MMD + reconstruction terms (CFL: 10)",
                                range=AT_LEAST_0)
    teacher_filter: str = _option(
        "none", "none; covering: only teachers that know the label; correct: only those that are also "
        "right", choices=TEACHER_FILTERS,
    )
    class_prior: str = _option(
        "none", "teachers-combined targets (amalgam-kd, cfl, adaptive, uhc-kd, uhc-ka): uniform reweighs "
        "the classes so the teachers' combined target spreads the training images evenly (for balanced "
        "data); labels: as the training labels spread them (reads labels); none: as is",
        choices=CLASS_PRIORS,
    )
    teacher_trust: str = _option(
        "fixed", "uhc-kd, uhc-ka: fixed weighs the teachers by --alpha on every image; per-class by "
        "--alpha times how far they know each class better than the student (validation accuracy, "
        "re-read every epoch), so a student that passes its teachers on a class learns it from labels",
        choices=TEACHER_TRUSTS,
    )
    target_neighbours: int = _option(
        0, "label-free targets (amalgam-kd, cfl, adaptive): K >= 1 gives each training image the mean "
        "of the teachers' combined plain-view targets over its K nearest training images in the "
        "teachers' features (itself included; 1: its own alone); 0: the teachers on the view the "
        "student saw", range=AT_LEAST_0,
    )

    target_gate: str = _option(
        "teachers", "label-free targets (amalgam-kd): teachers: the teachers combined as they are; "
        "student: each teacher's answer weighed by the mass the student puts on its classes "
        "(ramped in from the teachers combined over --gate-warmup epochs)", choices=TARGET_GATES,
    )
    gate_warmup: float = _option(5.0, "epochs over which --target-gate student takes over from the "
                                 "teachers combined", range=AT_LEAST_0)
    hard_target_weight: float = _option(
        0.0, "label-free targets (amalgam-kd, cfl, adaptive): weight of a cross-entropy term towards the "
        "target's top class, as hard distillation (DeiT) does; 0: the soft target alone", range=AT_LEAST_0,
    )

    def __post_init__(self) -> None:
        check_fields(self)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TeacherOutputs:
    """Teachers' padded local logits [B, K, L], and feature maps when a method asks for them
    (their `HintTarget`s for a method with `hint_features_only`)."""

    logits: torch.Tensor
    features: list[torch.Tensor] | list[HintTarget] | None = None
    # the batch's training-set indices, for targets fitted per image at start-up
    index: torch.Tensor | None = None
    # the method's `teacher_targets` for these rows, computed once per image and view when the
    # teachers' outputs are cached (None: compute them from `logits`)
    targets: torch.Tensor | None = None


@dataclass(frozen=True)
class Capabilities:
    """What a method needs from a run, which decides what the run prepares for it: teachers or
    not, feature maps or only logits, labels or not, a pass over the training set at start-up.

    A method class declares it once (`capabilities = Capabilities(...)`); a sum of terms merges
    its parts' (`merged`), so each rule for combining a flag is written once.
    """

    options_used: tuple[str, ...] = ()  # MethodOptions fields the method reads (others are ignored)
    uses_teachers: bool = True
    needs_features: bool = False  # teachers' and student's feature maps, not only logits
    # the teachers' maps are read only through `hint_loss`, so `HintTarget`s (maps reduced to the
    # student's size: smaller to cache, cheaper to train on) may stand in for them
    hint_features_only: bool = False
    needs_labels: bool = True  # reads training labels; False: may train with `--labels none`
    # start-up hands `fit_to_training_set` the teachers' training-set logits (and, with
    # `fit_reads_features`, their pooled features); these three may depend on the options. A fit
    # that keeps something per training image (`fit_per_image`) is handed every image; one that
    # fits per class (a class prior) a bounded sample (`class_balance.prior_fit_rows`)
    fits_training_set: bool = False
    fit_reads_features: bool = False
    fit_per_image: bool = False
    # start-up hands `fit_to_validation` the teachers' logits on the validation images, and
    # every validation hands `observe_validation` the student's per-class accuracy
    fits_validation: bool = False

    @staticmethod
    def merged(parts: Sequence[Capabilities]) -> Capabilities:
        """The capabilities of a method whose loss is the sum of `parts`' terms."""
        readers = [part for part in parts if part.needs_features]
        return Capabilities(
            options_used=tuple(dict.fromkeys(option for part in parts for option in part.options_used)),
            uses_teachers=any(part.uses_teachers for part in parts),
            needs_features=bool(readers),
            # the cache may hold reduced maps only if every part that reads maps reads them as hints
            hint_features_only=bool(readers) and all(part.hint_features_only for part in readers),
            needs_labels=any(part.needs_labels for part in parts),
            fits_training_set=any(part.fits_training_set for part in parts),
            fit_reads_features=any(part.fit_reads_features for part in parts),
            fit_per_image=any(part.fit_per_image for part in parts),
            fits_validation=any(part.fits_validation for part in parts),
        )


CAPABILITY_NAMES = tuple(Capabilities.__dataclass_fields__)


class Capability:
    """`method.needs_labels` and the like: the field of the same name of its `capabilities`,
    read alike on a method class, a built method and a sum-of-terms recipe."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, owner: type | None = None):
        return getattr((owner if obj is None else obj).capabilities, self.name)


class ReadsCapabilities:
    """Each capability as an attribute of its own (`method.needs_labels`), on a method class, a
    built method and a sum-of-terms recipe alike; `capabilities` stays the one declaration."""

    options_used = Capability()
    uses_teachers = Capability()
    needs_features = Capability()
    hint_features_only = Capability()
    needs_labels = Capability()
    fits_training_set = Capability()
    fit_reads_features = Capability()
    fit_per_image = Capability()
    fits_validation = Capability()


class Method(ReadsCapabilities, nn.Module):
    """A distillation method: named loss terms from the student's and teachers' outputs.

    Methods own any trainable helpers (regressors, projectors); the trainer optimises them
    together with the student and never needs to know which method it runs. What a method
    needs from the run is its `capabilities`; a subclass may also state a capability as a class
    attribute (`uses_teachers = False`), which is folded into its `capabilities`.
    """

    name = "base"
    capabilities = Capabilities()

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        stated = {name: cls.__dict__[name] for name in CAPABILITY_NAMES
                  if name in cls.__dict__ and not isinstance(cls.__dict__[name], Capability | property)}
        if stated:
            cls.capabilities = replace(cls.capabilities, **stated)
            for name in stated:
                delattr(cls, name)

    def __init__(self, roster: Roster, options: MethodOptions):
        super().__init__()
        self.roster = roster
        self.options = options
        self.capabilities = self.capabilities_at(options)
        self.epochs_done = 0  # set by the trainer before each epoch, for terms that ramp up

    @classmethod
    def capabilities_at(cls, options: MethodOptions) -> Capabilities:
        """The capabilities of this method run with `options`: the class's, unless an option
        changes them (a fit at start-up that only some options ask for)."""
        return cls.capabilities

    def start_epoch(self, epochs_done: int) -> None:
        self.epochs_done = epochs_done

    def setup(self, student_features: torch.Tensor, teacher_features: list[torch.Tensor],
              teachers: list[nn.Module]) -> None:
        """Build trainable helpers once shapes are known: the student's and each teacher's
        feature maps on one dry batch, and the frozen teachers themselves (for their heads)."""

    @property
    def fixed_targets(self) -> bool:
        """Whether `teacher_targets` is what this method pulls the student to, a function of each
        row's teacher logits alone: then cached teachers' targets are computed once per image and
        view (`teachers/cache.py`) instead of per batch per epoch."""
        return False

    def teacher_targets(self, teacher_logits: torch.Tensor) -> torch.Tensor:
        """[B, C] target over the union from the teachers' logits [B, K, L], at this method's options."""
        raise NotImplementedError(f"{self.name} has no targets from the teachers' logits alone")

    def target_block_rows(self, teacher_logits: torch.Tensor) -> int:
        """How many rows of `teacher_logits` [N, K, L] one `teacher_targets` call may take."""
        width = teacher_logits.shape[1] * teacher_logits.shape[2] + self.roster.num_classes
        return max(1, TARGET_BLOCK_ENTRIES // width)

    def over_blocks(self, combine: Callable[[torch.Tensor], torch.Tensor],
                    teacher_logits: torch.Tensor) -> torch.Tensor:
        """`combine` over many images' logits [N, K, L], `target_block_rows` at a time, concatenated."""
        blocks = teacher_logits.split(self.target_block_rows(teacher_logits))
        return torch.cat([combine(block) for block in blocks])

    def targets_for(self, teacher: TeacherOutputs) -> torch.Tensor:
        """The batch's `teacher_targets`: memoised with the cache when it holds them, else computed."""
        return teacher.targets if teacher.targets is not None else self.teacher_targets(teacher.logits)

    def fit_to_training_set(self, teacher_logits: torch.Tensor, teacher_features: torch.Tensor | None = None,
                            labels: torch.Tensor | None = None) -> str | None:
        """Fit what depends on the whole training set, from every teacher's logits [N, K, L] on
        its plain images (every image where `fit_per_image`, else a bounded sample) and, where
        `fit_reads_features`, their pooled features [N, D] (`losses.neighbours.pooled_features`),
        and, for `--class-prior labels` only, those images' training labels [N]; run once at
        start-up, and again on resume: it is a pure function of the teachers, the images and the
        labels. Returns a line for the log saying what was fitted."""
        return None

    def fit_to_validation(self, teacher_logits: torch.Tensor, labels: torch.Tensor) -> str | None:
        """Fit what depends on how the teachers do on the validation images (their logits
        [N, K, L], plain view, and the labels); run at start-up and on resume, where
        `fits_validation`. Returns a line for the log."""
        return None

    def observe_validation(self, per_class_accuracy: torch.Tensor) -> None:
        """Told the student's per-class validation accuracy [C] (NaN: no image) after each
        validation, for weights that follow the student; state kept here must be a buffer, so
        a resumed run goes on with it."""

    def student_forward(self, student: nn.Module, x: torch.Tensor):
        if self.needs_features:
            features = student.forward_features(x)
            return student.forward_head(features), features
        return student(x), None

    def loss_terms(
        self,
        student_logits: torch.Tensor,
        student_features: torch.Tensor | None,
        teacher: TeacherOutputs | None,
        labels: torch.Tensor | None,  # None under `--labels none` (only for needs_labels = False)
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def predict(self, student: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return student(x)


# Builds a method from (roster, options), and tells its `name` and `options_used` unbuilt:
# a Method subclass, or a SumOfTerms recipe.
MethodFactory = Callable[[Roster, MethodOptions], Method]

# `--method` name → factory, in the order the method files register (the order `compare`
# lists and runs them in). Just a dict; each method file adds itself with `register_method`.
METHODS: dict[str, MethodFactory] = {}


def register_method(factory: MethodFactory) -> MethodFactory:
    """Class decorator, or a call on a recipe: a new method file edits no other file."""
    if factory.name in METHODS:
        raise ValueError(f"two methods are called {factory.name!r}")
    METHODS[factory.name] = factory
    return factory
