r"""Loss presets: which formula and which scale the distillation methods' soft term takes.

The poster's numbers, Yuan et al.'s code and a K-independent reading of Yuan et al. disagree on the
soft term's scale, and the difference is not small on CIFAR-10 (K = 10); see docs/trainers.md.

- ``poster``: the poster's notebook: (1-α) H(q, p) + α · ``nn.KLDivLoss()``(log p_τ, target_τ), an
  element-wise mean (the batch-mean KL ÷ K), student also at τ, no multiplier and no τ².
- ``yuan-literal``: Yuan et al.'s code as written: element-wise-mean KL times their multiplier m,
  i.e. m/K on our batch-mean KL; τ² on the teacher term (``loss_kd``, ``loss_kd_self``), none on
  the virtual teacher's (``loss_kd_regularization``), whose student stays at τ = 1.
- ``yuan-strength`` (default): Yuan et al.'s formulas and α, τ, a, with the multiplier converted at
  K = 100, the CIFAR-100 their configurations were tuned on: m/100 whatever the data set. The total
  KL weight α·m·τ² is then Yuan's CIFAR-100 value on any K, and the Tf-KD-reg loss is minimised at
  nearly the same p(true) (0.910 at K = 10, 0.901 at K = 100; the virtual teacher itself moves with K).
- ``legacy``: how runs made before presets existed were filled (Yuan's m/K for Tf-KD; KD's own
  stored α, τ, m); only so that their ``config.json`` reads back with a name.

A preset only touches methods with a ``formula`` (`trainers.methods.Method`); the literature
baselines (TRADES, MART, ARD, RSLAD, IAD) take their own papers' scales whatever the preset.

`loss_minimising_p_true` is the number the Virtual-teacher page shows per run: where the run's actual
loss is lowest as a function of the student's p(true), the rest spread evenly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from .errors import TrainersError
from .losses import multiplier_from_elementwise
from .registry import Registry

if TYPE_CHECKING:
    from .methods import Hyper, Method

YUAN_TUNED_CLASSES = 100  # every configuration in Yuan et al.'s repository is for CIFAR-100
DEFAULT_PRESET = "yuan-strength"
LEGACY_PRESET = "legacy"

ScaleRule = Callable[[str, Mapping[str, Any], int], dict[str, Any]]


@dataclass(frozen=True)
class Preset:
    """A rule giving a distillation method's scale fields from its formula, source defaults and K.

    ``scales(formula, defaults, K)`` returns some of ``multiplier``, ``temperature_squared`` and
    ``student_temperature``; ``formula`` is ``"kd"`` (a real teacher) or ``"virtual"`` (Tf-KD-reg).
    """

    summary: str
    scales: ScaleRule


def _poster(formula: str, defaults: Mapping[str, Any], num_classes: int) -> dict[str, Any]:
    return {"multiplier": 1.0 / num_classes, "temperature_squared": False,
            "student_temperature": defaults.get("temperature", 1.0)}


def _yuan(classes_for_conversion: Callable[[int], int]) -> ScaleRule:
    """Yuan et al.'s formulas; their element-wise multiplier converted with ``classes_for_conversion(K)``."""

    def scales(formula: str, defaults: Mapping[str, Any], num_classes: int) -> dict[str, Any]:
        out: dict[str, Any] = {"temperature_squared": formula == "kd",
                               "student_temperature": defaults.get("temperature", 1.0) if formula == "kd" else 1.0}
        if "elementwise_multiplier" in defaults:
            classes = classes_for_conversion(num_classes)
            out["multiplier"] = multiplier_from_elementwise(defaults["elementwise_multiplier"], classes)
        return out

    return scales


PRESETS = Registry[Preset]("preset")
for _name, _preset in (
    ("poster", Preset("the poster's notebook: α·KL/K, student at τ, no multiplier, no τ²", _poster)),
    ("yuan-literal", Preset("Yuan et al.'s code as written: multiplier m/K, τ² on teacher KD", _yuan(lambda k: k))),
    ("yuan-strength", Preset("Yuan et al.'s formulas at their CIFAR-100 strength: multiplier m/100 on any K",
                             _yuan(lambda k: YUAN_TUNED_CLASSES))),
    (LEGACY_PRESET, Preset("runs made before presets: Yuan's m/K for Tf-KD, KD as stored", _yuan(lambda k: k))),
):
    PRESETS.add(_name, _preset)


def preset_scales(preset: str, formula: str | None, defaults: Mapping[str, Any], num_classes: int) -> dict[str, Any]:
    """The scale fields ``preset`` gives a method of ``formula`` (none for methods without one)."""
    rule = PRESETS.get(preset)
    return {} if formula is None else rule.scales(formula, defaults, num_classes)


# --- where a run's loss is minimised -----------------------------------------------------------

def _student_logits(p_true: float, num_classes: int) -> torch.Tensor:
    """Logits of a prediction with p(true) = ``p_true`` on class 0 and the rest spread evenly."""
    rest = (1.0 - p_true) / (num_classes - 1)
    logits = torch.full((1, num_classes), math.log(rest), dtype=torch.float64)
    logits[0, 0] = math.log(p_true)
    return logits


def _golden_minimum(f: Callable[[float], float], low: float, high: float, iterations: int = 80) -> float:
    ratio = (math.sqrt(5) - 1) / 2
    c, d = high - ratio * (high - low), low + ratio * (high - low)
    fc, fd = f(c), f(d)
    for _ in range(iterations):
        if fc < fd:
            high, d, fd = d, c, fc
            c = high - ratio * (high - low)
            fc = f(c)
        else:
            low, c, fc = c, d, fd
            d = low + ratio * (high - low)
            fd = f(d)
    return (low + high) / 2


def _hyper_from(method: Method, hyper: Hyper | Mapping[str, Any], num_classes: int) -> Hyper:
    from .methods import Hyper

    if isinstance(hyper, Hyper):
        return hyper
    values = method.resolve_defaults(num_classes, hyper.get("preset") or LEGACY_PRESET)
    values.update({k: v for k, v in hyper.items() if k in Hyper.__dataclass_fields__ and v is not None})
    return Hyper(**values)


def loss_minimising_p_true(method: str | Method, hyper: Hyper | Mapping[str, Any], num_classes: int,
                           teacher_p_true: float | None = None) -> float | None:
    """The student's p(true) at which the method's actual loss is lowest, the other classes even.

    The loss is the method's own (`trainers.methods.distillation_loss`) on one sample, minimised
    numerically over p(true) in (0, 1): a grid, then a golden-section search around its best point.
    For Tf-KD-reg with the student at τ = 1 this is ((1-α) + α m t) / ((1-α) + α m), t the virtual
    teacher's p(true); the function also covers the poster's student at τ, and any stored config.

    Args:
        method: a registered method's name or entry.
        hyper: its `Hyper`, or a run's ``config.json`` as a mapping (missing fields: the legacy fill).
        num_classes: K.
        teacher_p_true: for methods with a real teacher, the teacher's p(true) at τ = 1 (rest even);
            without it such methods give None, as do methods without a distillation formula.
    """
    from .methods import METHODS, distillation_loss

    entry = METHODS.get(method) if isinstance(method, str) else method
    if num_classes < 2:
        raise TrainersError(f"num_classes must be at least 2, got {num_classes!r}")
    if entry.formula is None or (entry.formula == "kd" and teacher_p_true is None):
        return None
    resolved = _hyper_from(entry, hyper, num_classes)
    labels = torch.zeros(1, dtype=torch.long)
    teacher = None if teacher_p_true is None else _student_logits(teacher_p_true, num_classes)

    def loss(p_true: float) -> float:
        return float(distillation_loss(entry.formula or "", _student_logits(p_true, num_classes), labels,
                                       resolved, teacher))

    grid = [i / 400 for i in range(1, 400)] + [1 - 10.0**-e for e in range(3, 10)]
    grid.sort()
    values = [loss(p) for p in grid]
    best = min(range(len(grid)), key=values.__getitem__)
    low = grid[best - 1] if best > 0 else grid[0] / 2
    high = grid[best + 1] if best + 1 < len(grid) else (1 + grid[-1]) / 2
    return _golden_minimum(loss, low, high)


def config_loss_minimiser(config: Mapping[str, Any]) -> float | None:
    """`loss_minimising_p_true` of a run's stored ``config.json`` (None when it has no K or no formula)."""
    from .methods import METHODS

    name, num_classes = config.get("method"), config.get("num_classes")
    if not isinstance(name, str) or name not in METHODS or not isinstance(num_classes, int):
        return None
    return loss_minimising_p_true(name, config, num_classes)
