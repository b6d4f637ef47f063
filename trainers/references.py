"""Published numbers our runs are compared with: the poster's tables and the literature's Figure-7 anchors.

Each number belongs to one data set (and, for robust accuracy, one attack and ε); a reference point is
only ever put beside runs on the same data set (`reference_points`), so a Fashion-MNIST run is never
drawn on the poster's CIFAR-10 axes. Sources: the poster (its Figures 1, 2, 4, 7) and, for ResNet18 on
CIFAR-10 at L∞ 8/255, the adversarial-training and -distillation results listed in
shared/reference/protocol-notes.md.
"""

from __future__ import annotations

from dataclasses import dataclass

POSTER_SOURCE = "poster"
LITERATURE_SOURCE = "literature (as compiled in later papers)"
AUTOATTACK_PAPER_SOURCE = "Croce & Hein 2020, AutoAttack's table (PreAct ResNet18)"

# figure -> (data set, run name -> metric -> the poster's value, %). Metrics: test_acc (clean), autoattack_acc.
POSTER: dict[str, tuple[str, dict[str, dict[str, float]]]] = {
    "fig1": ("mnist", {"teacher": {"test_acc": 98.98}, "student": {"test_acc": 98.06},
                       "student-kd": {"test_acc": 98.73}}),
    "fig2": ("cifar10", {"teacher": {"test_acc": 95.29}, "student": {"test_acc": 94.98},
                         "rekd": {"test_acc": 95.46}}),
    "fig4": ("cifar10", {"baseline": {"test_acc": 94.98}, "tfkd-reg": {"test_acc": 95.39},
                         "tfkd-self": {"test_acc": 95.42}}),
    "fig7": ("cifar10", {"at": {"test_acc": 84.22, "autoattack_acc": 46.99},
                         "at-kd": {"test_acc": 82.70, "autoattack_acc": 47.66},
                         "at-tfkd-reg": {"test_acc": 82.02, "autoattack_acc": 48.28},
                         "at-tfkd-self": {"test_acc": 81.53, "autoattack_acc": 48.83}}),
}


@dataclass(frozen=True)
class ReferencePoint:
    """A published (clean, robust) pair: what it is, where it was measured and who reports it.

    Attributes:
        name: the method as its source names it (``TRADES``; the poster's run names for its own).
        clean: clean test accuracy, %.
        robust: robust accuracy, %.
        robust_label: what ``robust`` measured (``AutoAttack``).
        eps_label: the L∞ radius (``8/255``).
        dataset: the data set it was measured on (``cifar10``).
        model: the architecture (``resnet18``).
        source: who reports it (`POSTER_SOURCE`, `LITERATURE_SOURCE`, ...).
        method: the `trainers.methods` entry that trains it, if any (``trades``), so a table can put
            it beside our run of that method.
    """

    name: str
    clean: float
    robust: float
    robust_label: str
    eps_label: str
    dataset: str
    model: str
    source: str
    method: str | None = None


LITERATURE: tuple[ReferencePoint, ...] = tuple(
    ReferencePoint(name, clean, robust, "AutoAttack", "8/255", "cifar10", model, source, method)
    for name, clean, robust, model, source, method in (
        ("PGD-AT", 82.78, 44.63, "resnet18", LITERATURE_SOURCE, "at"),
        ("TRADES", 82.41, 48.37, "resnet18", LITERATURE_SOURCE, "trades"),
        ("MART", 80.70, 47.49, "resnet18", LITERATURE_SOURCE, "mart"),
        ("ARD", 85.04, 49.49, "resnet18", LITERATURE_SOURCE, "ard"),
        ("RSLAD", 83.59, 52.13, "resnet18", LITERATURE_SOURCE, "rslad"),
        ("IAD", 84.33, 50.09, "resnet18", LITERATURE_SOURCE, "iad"),
        ("Fast AT", 83.34, 43.21, "preact-resnet18", AUTOATTACK_PAPER_SOURCE, None),
    )
)


def poster_dataset(figure: str) -> str | None:
    """The data set the poster's ``figure`` was measured on, or None for a figure it has no numbers for."""
    return POSTER[figure][0] if figure in POSTER else None


def poster_numbers(figure: str) -> dict[str, dict[str, float]]:
    """Run name -> metric -> the poster's value for ``figure`` (empty when the poster has none)."""
    return POSTER[figure][1] if figure in POSTER else {}


def poster_points(figure: str = "fig7") -> list[ReferencePoint]:
    """The poster's (clean, AutoAttack) pairs of ``figure`` as reference points."""
    dataset, numbers = POSTER.get(figure, ("", {}))
    return [ReferencePoint(run, values["test_acc"], values["autoattack_acc"], "AutoAttack", "8/255", dataset,
                           "resnet18", POSTER_SOURCE)
            for run, values in numbers.items() if "autoattack_acc" in values]


def literature_point(method: str, dataset: str, model: str = "resnet18") -> ReferencePoint | None:
    """The published point of ``method`` for ``model`` on ``dataset`` (PGD-AT for ``at``), or None."""
    return next((p for p in LITERATURE if p.method == method and p.dataset == dataset and p.model == model), None)


def reference_points(dataset: str, eps_label: str = "8/255") -> list[ReferencePoint]:
    """Every (clean, robust) reference measured on ``dataset`` at ``eps_label``: the poster's, then the literature's.

    Empty for any other data set: a reference is never put beside runs it was not measured like.
    """
    return [p for p in (*poster_points("fig7"), *LITERATURE) if p.dataset == dataset and p.eps_label == eps_label]
