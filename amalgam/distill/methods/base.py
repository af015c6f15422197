"""What every distillation method provides to the trainer (mdistiller's shape, typed options)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

from amalgam.distill.losses.features import HintTarget
from amalgam.errors import UserError
from amalgam.tasks.spec import Roster


def _option(default, help: str, *aliases: str):
    """A MethodOptions field: `train.py` and `train.py compare` offer it as --<name-with-dashes>
    (plus `aliases`) with this default and help (amalgam/cli/method_options.py)."""
    return field(default=default, metadata={"help": help, "aliases": aliases})


@dataclass(frozen=True)
class MethodOptions:
    """All methods' hyper-parameters, each with the literature's default; recorded in config.json.

    A new field is a new command-line flag of `train.py` and `train.py compare`; nothing else to edit.
    """

    temperature: float = _option(4.0, "softening temperature T > 0", "-T")
    alpha: float = _option(0.5, "weight of the distillation term in [0, 1]; 0 = CE")
    dkd_alpha: float = _option(1.0, "DKD weight of the target-class term")
    dkd_beta: float = _option(8.0, "DKD weight of the non-target term")
    # On validation roster fashion-roster100 a 5-epoch ramp lifted DKD from 73.7 to 76.8 % (README)
    dkd_warmup: float = _option(5.0, "epochs over which DKD's terms ramp up from 0 (mdistiller: 20 of 240)")
    # FitNet's hint weight on the normalised hint loss: the old weight 10 on the raw MSE of the
    # `fashion` teachers (mean square ~1.4) carried over (README, "Choosing defaults")
    hint_weight: float = _option(15.0, "weight of FitNet's normalised hint loss (fitnet, fitnet+*)")
    simkd_weight: float = _option(1.0, "weight of SimKD's feature loss")
    simkd_ratio: int = _option(2, "SimKD projector bottleneck ratio r")
    confidence_weighting: bool = _option(False, "partial-kd: weight teachers by their confidence")
    cfl_weight: float = _option(10.0, "cfl: weight w of its MMD + reconstruction terms (CFL: 10)")
    teacher_filter: str = _option(  # one of TEACHER_FILTERS
        "none", "none; covering: only teachers that know the label; correct: only those that are also right"
    )
    class_prior: str = _option(  # one of CLASS_PRIORS
        "none", "label-free targets (amalgam-kd, cfl, adaptive): uniform reweighs the classes so the "
        "teachers' combined target spreads the training images evenly (for balanced data); none: as is"
    )
    target_neighbours: int = _option(
        0, "label-free targets (amalgam-kd, cfl, adaptive): K >= 1 gives each training image the mean "
        "of the teachers' combined plain-view targets over its K nearest training images in the "
        "teachers' features (itself included; 1: its own alone); 0: the teachers on the view the "
        "student saw"
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise UserError(f"--alpha must be in [0, 1], got {self.alpha}")
        if not self.temperature > 0.0:
            raise UserError(f"--temperature must be > 0, got {self.temperature}")
        if min(self.dkd_alpha, self.dkd_beta, self.dkd_warmup, self.hint_weight, self.simkd_weight) < 0:
            raise UserError("--dkd-alpha, --dkd-beta, --dkd-warmup, --hint-weight and --simkd-weight "
                            "must be >= 0")
        if self.simkd_ratio < 1:
            raise UserError(f"--simkd-ratio must be >= 1, got {self.simkd_ratio}")
        if self.target_neighbours < 0:
            raise UserError(f"--target-neighbours must be >= 0, got {self.target_neighbours}")
        if self.teacher_filter not in TEACHER_FILTERS:
            raise UserError(f"--teacher-filter must be one of {list(TEACHER_FILTERS)}, "
                            f"got {self.teacher_filter!r}")
        if self.class_prior not in CLASS_PRIORS:
            raise UserError(f"--class-prior must be one of {list(CLASS_PRIORS)}, got {self.class_prior!r}")

    def to_dict(self) -> dict:
        return asdict(self)


TEACHER_FILTERS = ("none", "covering", "correct")
CLASS_PRIORS = ("none", "uniform")


@dataclass
class TeacherOutputs:
    """Teachers' padded local logits [B, K, L], and feature maps when a method asks for them
    (their `HintTarget`s for a method with `hint_features_only`)."""

    logits: torch.Tensor
    features: list[torch.Tensor] | list[HintTarget] | None = None
    # the batch's training-set indices, for targets fitted per image at start-up
    index: torch.Tensor | None = None


class Method(nn.Module):
    """A distillation method: named loss terms from the student's and teachers' outputs.

    Methods own any trainable helpers (regressors, projectors); the trainer optimises them
    together with the student and never needs to know which method it runs.
    """

    name = "base"
    uses_teachers = True
    needs_features = False  # teachers' and student's feature maps, not only logits
    # the teachers' maps are read only through `hint_loss`, so `HintTarget`s (maps reduced to the
    # student's size: smaller to cache, cheaper to train on) may stand in for them
    hint_features_only = False
    needs_labels = True  # reads training labels; False: may train with `--labels none`
    options_used: tuple[str, ...] = ()  # MethodOptions fields this method reads (others are ignored)

    def __init__(self, roster: Roster, options: MethodOptions):
        super().__init__()
        self.roster = roster
        self.options = options
        self.epochs_done = 0  # set by the trainer before each epoch, for terms that ramp up

    def start_epoch(self, epochs_done: int) -> None:
        self.epochs_done = epochs_done

    def setup(self, student_features: torch.Tensor, teacher_features: list[torch.Tensor],
              teachers: list[nn.Module]) -> None:
        """Build trainable helpers once shapes are known: the student's and each teacher's
        feature maps on one dry batch, and the frozen teachers themselves (for their heads)."""

    @property
    def fits_training_set(self) -> bool:
        """Whether start-up must hand `fit_to_training_set` the teachers' training-set logits."""
        return False

    @property
    def fit_reads_features(self) -> bool:
        """Whether `fit_to_training_set` also needs the teachers' pooled features."""
        return False

    def fit_to_training_set(self, teacher_logits: torch.Tensor,
                            teacher_features: torch.Tensor | None = None) -> str | None:
        """Fit what depends on the whole training set, from every teacher's logits [N, K, L] on
        its plain images and, where `fit_reads_features`, their pooled features [N, D]
        (`losses.neighbours.pooled_features`); run once at start-up, and again on resume: it is a
        pure function of the teachers and the images. Returns a line for the log saying what was
        fitted."""
        return None

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
