"""The training loop: one student, one method, optional teachers; state that resumes exactly.

Nothing here touches files: the run directory code saves `state_dict()` and feeds it back.
Randomness that matters for resuming (shuffling, augmentation) is drawn from generators
seeded by (seed, epoch), and the global RNG (dropout) is part of the saved state.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from amalgam.distill.engine.batching import batch_indices, epoch_generator, predict_logits
from amalgam.distill.engine.distributed import DistEnv, average_gradients, sum_across
from amalgam.distill.engine.label_modes import LABEL_FREE, check_labels_mode
from amalgam.distill.engine.loss_log import add_measures, batch_measures, epoch_measures
from amalgam.distill.engine.optim import make_optimizer, make_scheduler
from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.engine.views import augment_with_flips, to_unit_float, view_for_teachers
from amalgam.distill.methods.base import Method, TeacherOutputs
from amalgam.errors import UserError
from amalgam.models.metrics import classification_scores
from amalgam.models.model_input import ModelInput
from amalgam.tasks.images import ImageSet
from amalgam.ui import track


class TeacherSource(Protocol):
    """The teachers' outputs for a batch, from the cache or online: by training-set index and
    the view the student saw; `mirrored` (bool [B], None when nothing was flipped) picks each
    sample's cached view, so the target always comes from the image the student was shown."""

    def __call__(self, index: torch.Tensor, view: torch.Tensor,
                 mirrored: torch.Tensor | None = None) -> TeacherOutputs: ...


def validation_per_class(scores: dict) -> torch.Tensor:
    """[C] per-class validation accuracy from `classification_scores`; NaN for a class the
    validation set has no image of."""
    accuracy, support = torch.tensor(scores["per_class_accuracy"]), torch.tensor(scores["support"])
    return torch.where(support > 0, accuracy, torch.nan)


class NonFiniteLoss(UserError):
    """Training diverged; the message names the step and the loss terms."""


class FeaturesAndLogits(nn.Module):
    """One forward returning (logits, last feature map), so DDP sees the whole student pass."""

    def __init__(self, student: nn.Module):
        super().__init__()
        self.student = student

    def forward(self, x: torch.Tensor):
        features = self.student.forward_features(x)
        return self.student.forward_head(features), features


class Trainer:
    def __init__(
        self,
        student: nn.Module,
        method: Method,
        student_input: ModelInput,
        train: ImageSet,
        val: ImageSet,
        num_classes: int,
        config: TrainConfig,
        teachers: TeacherSource | None = None,
        dist_env: DistEnv | None = None,
    ):
        if method.uses_teachers and teachers is None:
            raise UserError(f"method {method.name!r} needs teachers; train them first")
        check_labels_mode(method.name, config.labels, method.options.class_prior)
        self.device = torch.device(config.device)
        self.student = student.to(self.device)
        self.method = method.to(self.device)
        self.student_input = student_input
        self.train_set, self.val_set = train, val
        self.num_classes = num_classes
        self.config = config
        self.teachers = teachers
        self.labels_hidden = config.labels == LABEL_FREE
        self.epoch = 0
        self.history: list[dict] = []
        self.progress: dict | None = None  # position inside the current epoch, for mid-epoch resumes
        self.dist = dist_env or DistEnv()
        self._setup_speedups()  # before the optimiser, which must see the final parameters
        self._setup_ddp()
        params = list(self.student.parameters()) + list(self.method.parameters())
        self.optimizer = make_optimizer(params, config.opt, config.lr, config.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, config)

    # --- CUDA speed-ups: every branch below is skipped on CPU ----------------------------------

    def _setup_speedups(self) -> None:
        """bf16 autocast, channels_last and pinned batches on CUDA; torch.compile on request.

        `self.student` stays the plain module so checkpoints never carry compile's prefixes;
        training steps call `self.forward_model`, which shares its parameters.
        """
        self.on_cuda = self.device.type == "cuda"
        self.channels_last = self.on_cuda and self.config.channels_last
        if self.channels_last:
            self.student = self.student.to(memory_format=torch.channels_last)
        self.forward_model: nn.Module = torch.compile(self.student) if self.config.compile else self.student

    def _setup_ddp(self) -> None:
        """Under torchrun the student's forward goes through DistributedDataParallel.

        Feature methods need the student's feature map as well as its logits, so DDP wraps a
        module that returns both; gradients of the method's own helpers are averaged by hand.
        """
        self.ddp_model: nn.Module | None = None
        if not self.dist.active:
            return
        module = FeaturesAndLogits(self.forward_model) if self.method.needs_features else self.forward_model
        device_ids = [self.device.index] if self.on_cuda else None
        self.ddp_model = DistributedDataParallel(module, device_ids=device_ids)

    def _student_forward(self, x: torch.Tensor):
        if self.ddp_model is None:
            return self.method.student_forward(self.forward_model, x)
        out = self.ddp_model(x)
        return out if self.method.needs_features else (out, None)

    def _epoch_order(self, generator: torch.Generator) -> list[torch.Tensor]:
        """This process's batches: all of them, or its DistributedSampler shard under torchrun."""
        if not self.dist.active:
            return batch_indices(len(self.train_set), self.config.batch_size, generator)
        sampler = DistributedSampler(
            range(len(self.train_set)),
            num_replicas=self.dist.world_size,
            rank=self.dist.rank,
            shuffle=True,
            seed=self.config.seed,
        )
        sampler.set_epoch(self.epoch)
        order = torch.tensor(list(sampler))
        batches = list(order.split(self.config.batch_size))
        if len(batches) > 1 and len(batches[-1]) < 2:
            batches.pop()
        return batches

    def _autocast(self):
        if self.on_cuda and self.config.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _batch_images(self, index: torch.Tensor) -> torch.Tensor:
        """A batch of uint8 images; on CUDA gathered into pinned memory so the copy is async.

        (Pinning the whole set once would not help: indexing a pinned tensor returns pageable
        memory.)"""
        images = self.train_set.images[index]
        return images.pin_memory() if self.on_cuda else images

    # -------------------------------------------------------------------------------------------

    def _step(self, index: torch.Tensor, generator: torch.Generator, step: int):
        original = to_unit_float(self._batch_images(index), self.device)
        view, mirrored = augment_with_flips(original, self.config.augment, generator)
        # --labels none: not even read, so the loss cannot depend on them (nor train acc/CE report them)
        labels = None
        if not self.labels_hidden:
            labels = self.train_set.labels[index].to(self.device, non_blocking=True)
        x = self.student_input(view)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            logits, features = self._student_forward(x)
            teacher_out = None
            if self.method.uses_teachers:
                asked = view_for_teachers(original, view, self.config.augment, mirrored)
                teacher_out = self.teachers(index, asked, mirrored)
            terms = self.method.loss_terms(logits, features, teacher_out, labels)
        loss = sum(terms.values())
        if not torch.isfinite(loss):
            values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
            raise NonFiniteLoss(
                f"loss became non-finite at epoch {self.epoch + 1} step {step} ({values}); "
                "lower --lr or --temperature and resume from the last good checkpoint"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(self.method.parameters(), self.dist)
        self._check_gradients(step)
        self.optimizer.step()
        measures = batch_measures(terms, logits, labels)  # each term, and plain CE (loss_log.py)
        correct = 0 if labels is None else int((logits.argmax(1) == labels).sum())
        return loss.item() * len(index), correct, measures

    def _check_gradients(self, step: int) -> None:
        """A finite loss can still have a non-finite gradient (sqrt or log at 0, overflow in a
        custom term); one optimiser step with it leaves NaN weights that the next loss check
        comes too late for, so stop before the step, with the weights still good."""
        grads = [p.grad for group in self.optimizer.param_groups for p in group["params"]
                 if p.grad is not None]
        if grads and not torch.isfinite(torch.nn.utils.get_total_norm(grads)):
            raise NonFiniteLoss(
                f"gradients became non-finite at epoch {self.epoch + 1} step {step} (the loss was "
                "finite); lower --lr or --temperature and resume from the last good checkpoint"
            )

    def train_epoch(self, after_step: Callable[[Trainer], None] | None = None) -> dict:
        """One epoch of training, then validation; appends to and returns the history row.

        Resumes mid-epoch when `self.progress` holds a saved position (step, generator state,
        running sums); `after_step` runs after every step (mid-epoch checkpoints, Ctrl-C).
        """
        started = time.perf_counter()
        generator = epoch_generator(self.config.seed + 7919 * self.dist.rank, self.epoch)
        batches = self._epoch_order(generator)
        self.student.train()
        self.method.train()
        self.method.start_epoch(self.epoch)
        progress = self.progress or {"step": 0, "loss_sum": 0.0, "correct": 0, "seen": 0}
        if self.progress is not None:
            generator.set_state(self.progress["generator"])
        loss_sum, correct, seen = progress["loss_sum"], progress["correct"], progress["seen"]
        term_sums = progress.get("term_sums")  # absent in states saved before terms were logged
        description = f"epoch {self.epoch + 1}/{self.config.epochs}"
        remaining = range(int(progress["step"]), len(batches))
        for step in track(remaining, len(remaining), description, self.config.quiet):
            batch_loss, batch_correct, measures = self._step(batches[step], generator, step)
            loss_sum, correct, seen = (
                loss_sum + batch_loss,
                correct + batch_correct,
                seen + len(batches[step]),
            )
            term_sums = add_measures(term_sums, measures, len(batches[step]))
            self.progress = {
                "step": step + 1,
                "generator": generator.get_state(),
                "loss_sum": loss_sum,
                "correct": correct,
                "seen": seen,
                "term_sums": term_sums,
            }
            if after_step is not None:
                after_step(self)
        self.progress = None
        loss_sum, correct, seen = sum_across([loss_sum, correct, seen], self.dist)
        terms = epoch_measures(term_sums, lambda values: sum_across(values, self.dist))
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        val = self.validate()
        self.method.observe_validation(validation_per_class(val))
        self.epoch += 1
        row = {
            "epoch": self.epoch,
            "train_loss": loss_sum / max(seen, 1),
            "train_acc": None if self.labels_hidden else correct / max(seen, 1),
            **terms,  # train_terms (each loss term) and train_ce, the same quantity as val_ce
            "val_loss": val["nll"],
            "val_ce": val["nll"],
            "val_acc": val["accuracy"],
            "val_macro_f1": val["macro_f1"],
            "lr": lr,
            "seconds": time.perf_counter() - started,
        }
        self.history.append(row)
        return row

    def validate(self) -> dict:
        self.student.eval()
        self.method.eval()
        logits = predict_logits(
            lambda x: self.method.predict(self.student, x),
            self.student_input,
            self.val_set,
            self.device,
        )
        if not torch.isfinite(logits).all():  # NaN logits still yield an accuracy: never score them
            raise NonFiniteLoss(
                f"the student's validation logits became non-finite in epoch {self.epoch + 1} (its "
                "weights diverged); lower --lr or --temperature and resume from the last good checkpoint"
            )
        return classification_scores(logits, self.val_set.labels, self.num_classes)

    def best_epoch(self) -> dict:
        """The history row chosen on validation accuracy (ties: lower validation loss)."""
        return max(self.history, key=lambda r: (r["val_acc"], -r["val_loss"]))

    def state_dict(self) -> dict:
        return {
            "student": self.student.state_dict(),
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "history": self.history,
            "rng": torch.get_rng_state(),
            "progress": self.progress,
        }

    def load_state_dict(self, state: dict) -> None:
        self.student.load_state_dict(state["student"])
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        torch.set_rng_state(state["rng"])
        self.progress = state.get("progress")
