r"""Training methods of the poster and of the adversarial-distillation literature, one registry entry each.

A method turns a batch into a loss; the training loop knows no method by name. Each entry says
whether it needs a teacher (and which kind), whether it trains on adversarial inputs, which schedule
preset it trains with (`trainers.config.SCHEDULES`), which training attack crafts its x'
(`trainers.attacks.TRAINING_ATTACKS`, stored in the config as ``attack``), and its hyperparameter
defaults with their source. Distillation methods of the poster also name their soft term's
``formula``, whose scale the loss preset sets (`trainers.presets`). Adding a method is one
`Method` in the table at the end.

Symbols: x clean inputs, x' the training attack's inputs, q labels, p = softmax(student logits),
p^t teacher, p^d the virtual teacher, α, τ, a, β as in `trainers.losses` and
`trainers.adversarial_losses`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .adversarial_losses import ard_loss, iad_loss, mart_loss, rslad_loss, trades_loss
from .attacks import TRAINING_ATTACKS, training_attack
from .errors import TrainersError
from .losses import kd_loss, multiplier_from_elementwise, tfkd_reg_loss
from .presets import DEFAULT_PRESET, LEGACY_PRESET, PRESETS, preset_scales
from .registry import Registry

PGD7 = {"eps": 8 / 255, "step_size": 2 / 255, "attack_steps": 7, "attack": "ce"}  # Madry et al.'s CIFAR-10 PGD-7
PGD10 = {"eps": 8 / 255, "step_size": 2 / 255, "attack_steps": 10}  # ARD, RSLAD, IAD: PGD-10, step 2/255
TRADES_PGD = {"eps": 0.031, "step_size": 0.007, "attack_steps": 10}  # Zhang et al.'s and Wang et al.'s code


@dataclass(frozen=True)
class Hyper:
    """A method's resolved hyperparameters (copied from the run config), and the epoch being trained.

    ``epoch`` (0-based) and ``epochs`` let a method change over training (IAD's warm-up); the loop
    sets ``epoch`` each epoch with `dataclasses.replace`.
    """

    alpha: float = 0.0
    temperature: float = 1.0
    a: float = 0.99
    multiplier: float = 1.0
    student_temperature: float = 1.0
    temperature_squared: bool = True
    eps: float = 0.0
    step_size: float = 0.0
    attack_steps: int = 0
    attack: str = "ce"
    beta: float = 0.0
    iad_begin: float = 0.3
    epoch: int = 0
    epochs: int = 1

    @classmethod
    def from_config(cls, config: Any) -> Hyper:
        """The hyperparameters of a resolved `TrainConfig` (epoch 0)."""
        names = [n for n in cls.__dataclass_fields__ if n != "epoch"]
        return cls(**{name: getattr(config, name) for name in names if getattr(config, name, None) is not None})


@dataclass
class StepOutput:
    """What a method returns for one batch: the loss to minimise and the logits it trained on."""

    loss: torch.Tensor
    logits: torch.Tensor


LossFn = Callable[[nn.Module, "nn.Module | None", torch.Tensor, torch.Tensor, Hyper], StepOutput]
HYPER_CONFIG_FIELDS = ("alpha", "temperature", "a", "multiplier", "student_temperature", "temperature_squared",
                       "eps", "step_size", "attack_steps", "attack", "beta", "iad_begin")


@dataclass(frozen=True)
class Method:
    """A registered training method.

    Attributes:
        name: CLI name.
        summary: one line for ``--help`` and the dashboard.
        loss: ``(model, teacher, x, y, hyper) -> StepOutput``; x in [0, 1].
        teacher: what the teacher must be; empty for no teacher, else some of ``"any"``,
            ``"smaller"`` (fewer parameters: Re-KD), ``"same"`` (the student's architecture:
            self-training) and ``"adversarial"`` (trained by an adversarial method).
        adversarial: trains on attacked inputs, so it is validated and reported under PGD.
        defaults: hyperparameter defaults; ``elementwise_multiplier`` is a multiplier of an
            element-wise-mean KL (Yuan et al.'s configs), converted to ours by the preset.
        schedule: the `trainers.config.SCHEDULES` preset it trains with; None: the model family's.
        formula: ``"kd"`` or ``"virtual"`` for the poster's distillation methods, whose scale the
            loss preset sets; None for methods that keep their paper's scale.
        source: where the defaults come from.
    """

    name: str
    summary: str
    loss: LossFn
    teacher: tuple[str, ...] = ()
    adversarial: bool = False
    defaults: dict[str, Any] = field(default_factory=dict)
    schedule: str | None = None
    formula: str | None = None
    source: str = ""

    def resolve_defaults(self, num_classes: int, preset: str = DEFAULT_PRESET) -> dict[str, Any]:
        """Config defaults of this method's hyperparameters on K = ``num_classes`` under ``preset``."""
        out = {k: v for k, v in self.defaults.items() if k != "elementwise_multiplier"}
        if "elementwise_multiplier" in self.defaults:  # the source's code as written; a preset may rescale it
            out["multiplier"] = multiplier_from_elementwise(self.defaults["elementwise_multiplier"], num_classes)
        out.update(preset_scales(preset, self.formula, self.defaults, num_classes))
        base = Hyper()
        for key in HYPER_CONFIG_FIELDS:
            out.setdefault(key, getattr(base, key))
        TRAINING_ATTACKS.get(out["attack"])
        return out


METHODS = Registry[Method]("method")


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def adversarial_inputs(model: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
                       hyper: Hyper) -> torch.Tensor:
    """The x' of the training attack ``hyper.attack`` names, crafted in eval mode.

    Eval mode keeps the attack's forward passes out of BatchNorm's running averages. Under DDP the
    attack runs on the wrapped module: its input-only backward passes must not reach DDP's reducer.
    """
    target = _unwrap(model)
    was_training = target.training
    target.eval()
    try:
        return training_attack(target, teacher, x, y, hyper.attack, hyper.eps, hyper.step_size, hyper.attack_steps)
    finally:
        target.train(was_training)


@torch.no_grad()
def teacher_logits(teacher: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    """The frozen teacher's logits (eval mode, no gradients)."""
    if teacher is None:
        raise TrainersError("this method needs a teacher checkpoint (--teacher PATH)")
    return teacher(x)


# --- the poster's soft terms, shared by the training losses and `trainers.presets` ----------------

def _kd_term(logits: torch.Tensor, y: torch.Tensor, hyper: Hyper, teacher: torch.Tensor | None) -> torch.Tensor:
    if teacher is None:
        raise TrainersError("the KD formula needs the teacher's logits")
    return kd_loss(logits, teacher, y, hyper.alpha, hyper.temperature, hyper.multiplier, hyper.temperature_squared)


def _virtual_term(logits: torch.Tensor, y: torch.Tensor, hyper: Hyper, teacher: torch.Tensor | None) -> torch.Tensor:
    return tfkd_reg_loss(logits, y, hyper.alpha, hyper.temperature, hyper.a, hyper.multiplier,
                         hyper.student_temperature)


FORMULAS: dict[str, Callable[[torch.Tensor, torch.Tensor, Hyper, torch.Tensor | None], torch.Tensor]] = {
    "kd": _kd_term, "virtual": _virtual_term,
}


def distillation_loss(formula: str, logits: torch.Tensor, y: torch.Tensor, hyper: Hyper,
                      teacher: torch.Tensor | None = None) -> torch.Tensor:
    """The poster's loss of a ``formula`` (``kd``: `kd_loss`; ``virtual``: `tfkd_reg_loss`) with ``hyper``."""
    if formula not in FORMULAS:
        raise TrainersError(f"unknown distillation formula {formula!r}; expected one of: {', '.join(FORMULAS)}")
    return FORMULAS[formula](logits, y, hyper, teacher)


# --- the poster's methods ----------------------------------------------------------------------

def _cross_entropy(model: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
                   hyper: Hyper) -> StepOutput:
    logits = model(x)
    return StepOutput(F.cross_entropy(logits.float(), y), logits)


def _distill(model: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
             hyper: Hyper) -> StepOutput:
    logits = model(x)
    return StepOutput(_kd_term(logits, y, hyper, teacher_logits(teacher, x)), logits)


def _virtual_teacher(model: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
                     hyper: Hyper) -> StepOutput:
    logits = model(x)
    return StepOutput(_virtual_term(logits, y, hyper, None), logits)


def _adversarial_cross_entropy(model: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
                               hyper: Hyper) -> StepOutput:
    return _cross_entropy(model, teacher, adversarial_inputs(model, teacher, x, y, hyper), y, hyper)


def _adversarial_distill(model: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
                         hyper: Hyper) -> StepOutput:
    # Maroto et al.'s AKD: CE against α p^t(x') + (1-α) q, which equals the KD loss at τ = 1 up to a
    # constant; student and teacher both see the student's adversarial x'.
    return _distill(model, teacher, adversarial_inputs(model, teacher, x, y, hyper), y, hyper)


def _adversarial_virtual_teacher(model: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
                                 hyper: Hyper) -> StepOutput:
    return _virtual_teacher(model, teacher, adversarial_inputs(model, teacher, x, y, hyper), y, hyper)


def _adversarial_self_distill(model: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
                              hyper: Hyper) -> StepOutput:
    # The AT-pretrained teacher sees the clean x, the student the adversarial x'.
    clean_teacher = teacher_logits(teacher, x)
    logits = model(adversarial_inputs(model, teacher, x, y, hyper))
    return StepOutput(_kd_term(logits, y, hyper, clean_teacher), logits)


# --- the literature's baselines (trainers.adversarial_losses) --------------------------------------

def _clean_and_adversarial(model: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
                           hyper: Hyper) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The x' and the model's logits on x and on x' (two forward passes in train mode, as the papers' code)."""
    x_adv = adversarial_inputs(model, teacher, x, y, hyper)
    return x_adv, model(x), model(x_adv)


def _trades(model: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
            hyper: Hyper) -> StepOutput:
    _, clean, adv = _clean_and_adversarial(model, teacher, x, y, hyper)
    return StepOutput(trades_loss(clean, adv, y, hyper.beta), adv)


def _mart(model: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
          hyper: Hyper) -> StepOutput:
    _, clean, adv = _clean_and_adversarial(model, teacher, x, y, hyper)
    return StepOutput(mart_loss(clean, adv, y, hyper.beta), adv)


def _ard(model: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
         hyper: Hyper) -> StepOutput:
    clean_teacher = teacher_logits(teacher, x)
    _, clean, adv = _clean_and_adversarial(model, teacher, x, y, hyper)
    return StepOutput(ard_loss(clean, adv, clean_teacher, y, hyper.alpha, hyper.temperature, hyper.multiplier), adv)


def _rslad(model: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
           hyper: Hyper) -> StepOutput:
    clean_teacher = teacher_logits(teacher, x)
    _, clean, adv = _clean_and_adversarial(model, teacher, x, y, hyper)
    return StepOutput(rslad_loss(clean, adv, clean_teacher, hyper.multiplier), adv)


def iad_introspects(hyper: Hyper) -> bool:
    """Whether IAD's introspection term is on: from epoch round(iad_begin · epochs) (Zhu et al.: 60 of 200)."""
    return hyper.epoch >= round(hyper.iad_begin * hyper.epochs)


def _iad(model: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
         hyper: Hyper) -> StepOutput:
    clean_teacher = teacher_logits(teacher, x)
    x_adv, clean, adv = _clean_and_adversarial(model, teacher, x, y, hyper)
    introspect = iad_introspects(hyper)
    adv_teacher = teacher_logits(teacher, x_adv) if introspect else clean_teacher
    loss = iad_loss(clean, adv, clean_teacher, adv_teacher, y, hyper.alpha, hyper.temperature, hyper.beta,
                    introspect, hyper.multiplier)
    return StepOutput(loss, adv)


# Yuan et al.'s configurations (all for CIFAR-100; experiments/kd_experiments/resnet18_distill/*):
# KD and Re-KD of ResNet18 students α 0.6, τ 20 with their element-wise-mean KL (multiplier 1);
# Tf-KD-self α 0.95, τ 6, multiplier 50; Tf-KD-reg α 0.1, τ 20, a 0.99, multiplier 100.
YUAN_KD = {"alpha": 0.6, "temperature": 20.0, "elementwise_multiplier": 1.0}
TFKD_SELF = {"alpha": 0.95, "temperature": 6.0, "elementwise_multiplier": 50.0}
TFKD_REG = {"alpha": 0.1, "temperature": 20.0, "a": 0.99, "elementwise_multiplier": 100.0}
YUAN = "Yuan et al. (CVPR 2020) ResNet18 configs"

for _method in (
    Method("baseline", "cross-entropy H(q, p)", _cross_entropy),
    Method("kd", "KD: (1-α) H(q, p) + α m τ² KL(p^t_τ ‖ p_τ)", _distill, teacher=("any",), defaults=YUAN_KD,
           formula="kd", source=f"{YUAN} for KD (Hinton et al. give no α)"),
    Method("rekd", "reversed KD: the KD loss with a smaller, weaker teacher", _distill, teacher=("smaller",),
           defaults=YUAN_KD, formula="kd", source=f"{YUAN} for Re-KD"),
    Method("tfkd-self", "Tf-KD-self: KD from a pretrained model of the same architecture", _distill,
           teacher=("same",), defaults=TFKD_SELF, formula="kd", source=YUAN),
    Method("tfkd-reg", "Tf-KD-reg: KD from the manually designed virtual teacher p^d_τ", _virtual_teacher,
           defaults=TFKD_REG, formula="virtual", source=YUAN),
    Method("at", "PGD-7 adversarial training: H(q, p(x'))", _adversarial_cross_entropy, adversarial=True,
           defaults=PGD7, schedule="adversarial-exp", source="Madry et al. (ICLR 2018); Maroto et al.'s schedule"),
    Method("at-kd", "adversarial KD (AKD): student on x' from an adversarially trained teacher",
           _adversarial_distill, teacher=("adversarial",), adversarial=True,
           defaults={**PGD7, "alpha": 0.5, "temperature": 1.0, "multiplier": 1.0}, schedule="adversarial-exp",
           formula="kd", source="Maroto et al.'s AKD at τ 1; α 0.5 ours"),
    Method("at-tfkd-reg", "(1-α) H(q, p(x')) + α m KL(p^d_τ, p_τs(x'))", _adversarial_virtual_teacher,
           adversarial=True, defaults={**PGD7, **TFKD_REG}, schedule="adversarial-exp", formula="virtual",
           source=f"{YUAN}, PGD-7"),
    Method("at-tfkd-self", "(1-α) H(q, p(x')) + α m τ² KL(p^t_τ(x), p_τ(x')), AT-pretrained teacher",
           _adversarial_self_distill, teacher=("same", "adversarial"), adversarial=True,
           defaults={**PGD7, **TFKD_SELF}, schedule="adversarial-exp", formula="kd", source=f"{YUAN}, PGD-7"),
    Method("trades", "TRADES: H(q, p(x)) + β KL(p(x) ‖ p(x')), x' maximises the KL", _trades, adversarial=True,
           defaults={**TRADES_PGD, "attack": "trades-kl", "beta": 6.0}, schedule="trades-step",
           source="Zhang et al. (ICML 2019), official CIFAR-10 code"),
    Method("mart", "MART: BCE(p(x'), y) + β KL(p(x) ‖ p(x')) (1 - p_y(x))", _mart, adversarial=True,
           defaults={**TRADES_PGD, "attack": "ce-gaussian", "beta": 6.0}, schedule="trades-step",
           source="Wang et al. (ICLR 2020), official code"),
    Method("ard", "ARD: α τ² m KL(p^t_τ(x) ‖ p_τ(x')) + (1-α) H(q, p(x))", _ard, teacher=("adversarial",),
           adversarial=True, defaults={**PGD10, "attack": "ce", "alpha": 1.0, "temperature": 30.0,
                                       "elementwise_multiplier": 1.0}, schedule="ard-step",
           source="Goldblum et al. (AAAI 2020), official code (α 1, τ 30, element-wise KL)"),
    Method("rslad", "RSLAD: 5/6 KL(p^t(x) ‖ p(x')) + 1/6 KL(p^t(x) ‖ p(x)), x' maximises KL to p^t(x)", _rslad,
           teacher=("adversarial",), adversarial=True,
           defaults={**PGD10, "attack": "teacher-kl", "multiplier": 0.1}, schedule="rslad-step",
           source="Zi et al. (ICCV 2021), official code (its KL averages over 10 classes)"),
    Method("iad", "IAD-I: ARD + α (1 - p^t_y(x')^β) KL(p(x) ‖ p(x')) after a warm-up", _iad,
           teacher=("adversarial",), adversarial=True,
           defaults={**PGD10, "attack": "ce", "alpha": 1.0, "temperature": 1.0, "beta": 0.1, "iad_begin": 0.3,
                     "multiplier": 1.0}, schedule="ard-step",
           source="Zhu et al. (ICLR 2022), official IAD-I code (begin 60 of 200 epochs)"),
):
    METHODS.add(_method.name, _method)


def with_epoch(hyper: Hyper, epoch: int) -> Hyper:
    """``hyper`` for training epoch ``epoch`` (0-based)."""
    return dataclasses.replace(hyper, epoch=epoch)


def settle_loss_options(config: Any, method: Method) -> None:
    """Name a config's loss preset and check it and the training attack before any data are read.

    Methods without a distillation formula store no preset (it would not change them). A config
    without one that already knows its K was resolved before presets existed: it is `legacy`.
    """
    if method.formula is None:
        config.preset = None
    elif config.preset is None:
        config.preset = LEGACY_PRESET if config.num_classes is not None else DEFAULT_PRESET
    else:
        PRESETS.get(config.preset)
    if config.attack is not None:
        TRAINING_ATTACKS.get(config.attack)
