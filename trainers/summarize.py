"""The table rows behind every summary of runs: ``python -m trainers summarize`` and the dashboard both format these.

One function per table, each returning typed rows (frozen dataclasses; `dataclasses.asdict` gives a
CSV row):

- `run_rows`: one row per run — its headline clean and robust accuracy (`headline`) and its stale results.
- `robustness_panels`: Figure 7 — clean against robust accuracy per method, mean ± std over seeds, one
  panel per data set, with the poster's and the literature's points only in the panel of the data set
  they were measured on (`trainers.references`).
- `eps_curve_rows`, `breakdown_rows`: the ε sweep and AutoAttack's per-attack accuracies.
- `poster_tables`: Figures 1, 2, 4 and 7 beside the poster's numbers, those only when the runs are on
  the poster's data set.

Rules every row follows: only *current* results count (computed from the checkpoint file as it is now,
`trainers.provenance`); clean and robust accuracy in a row come from the same checkpoint and the same
images (`Measure`); every robust number carries `trainers.labels.robust_label`, so "AutoAttack" means
the standard suite and nothing else; seeds measured differently are never averaged together.

The input is `RunResults` — what a run folder holds, read by `RunResults.read` or assembled by the
dashboard from its run index.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import TrainersError
from .labels import eps_label as label_of_eps
from .labels import is_standard_autoattack, robust_label
from .provenance import fingerprints, freshness, is_current, provenance_of, referenced_files, same_images
from .recipes import RECIPES, RunSpec
from .references import ReferencePoint, literature_point, poster_dataset, poster_numbers, reference_points
from .run_folder import CONFIG_FILE, RunFileError, RunFolder

ROBUST_EPS_LABEL = "8/255"  # the poster's (and RobustBench's) L∞ budget for CIFAR-10
CHECKPOINT_FILES = ("checkpoints/best.pt", "checkpoints/last.pt")  # in the order a run reports them


# ---------------------------------------------------------------------------------------------------
# Input


@dataclass(frozen=True)
class RunResults:
    """What summaries read of one run.

    Attributes:
        id: the run's path relative to the folder summarised, posix (``fig7/seed0/at``).
        label: display name.
        config: ``config.json`` as a dict.
        results: ``results.json``, or None while the run has not finished.
        evaluation: ``evaluation.json`` as `RunFolder.read_evaluation` returns it (stale entries included).
        checkpoints: relative checkpoint path -> sha256 of the file now (`trainers.provenance.fingerprints`).
    """

    id: str
    label: str
    config: Mapping[str, Any]
    results: Mapping[str, Any] | None
    evaluation: Mapping[str, Any]
    checkpoints: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, root: Path, *, id: str, label: str, config: Mapping[str, Any], results: Mapping[str, Any] | None,
           evaluation: Mapping[str, Any], confine: Path | None = None) -> RunResults:
        """From files already read (the dashboard's run index), fingerprinting the checkpoints in ``root``.

        Only checkpoint files resolving inside ``confine`` (default ``root``) are read.
        """
        holders = (results or {}).get("provenance")
        stored = [{"provenance": p} for p in (holders.values() if isinstance(holders, Mapping) else [])]
        named = referenced_files(*(evaluation.get("results") or {}).values(),
                                 *(evaluation.get("sweeps") or {}).values(), *stored)
        checkpoints = fingerprints(root, [*CHECKPOINT_FILES, *named], confine=confine)
        return cls(id, label, config, results, evaluation, checkpoints)

    @classmethod
    def of_run(cls, run: Any) -> RunResults:
        """From an entry of the dashboard's run index.

        It needs ``id``, ``label``, ``path``, ``config``, ``results``, ``evaluation`` and, if set,
        ``files`` (its `RunFolder`, whose ``confine`` bounds which checkpoint files are read).
        """
        files = getattr(run, "files", None)
        return cls.of(Path(run.path), id=run.id, label=run.label, config=run.config or {}, results=run.results,
                      evaluation=run.evaluation or {}, confine=files.confine if files is not None else None)

    @classmethod
    def read(cls, folder: RunFolder, *, id: str | None = None, label: str | None = None) -> RunResults:
        """Read a run folder through its validated readers; a broken file raises `RunFileError`."""
        name = id or folder.root.name
        return cls.of(folder.root, id=name, label=label or name, config=folder.read_config(),
                      results=folder.read_results(), evaluation=folder.read_evaluation(), confine=folder.confine)

    def get(self, key: str) -> Any:
        """A config value (``method``, ``model``, ``dataset``, ``seed``), else the results' one."""
        value = self.config.get(key)
        return value if value is not None else (self.results or {}).get(key)


# ---------------------------------------------------------------------------------------------------
# Which numbers of a run are current, and which pair


def _results_provenance(run: RunResults, which: str = "best") -> Mapping[str, Any] | None:
    holder = (run.results or {}).get("provenance")
    return holder.get(which) if isinstance(holder, Mapping) and isinstance(holder.get(which), Mapping) else None


def results_are_current(run: RunResults) -> bool:
    """Whether ``results.json``'s best scores came from the best checkpoint file as it is now."""
    prov = _results_provenance(run)
    return prov is not None and is_current({"provenance": prov}, run.checkpoints)


def stale_notes(run: RunResults) -> list[str]:
    """One line per stored result that is stale (never shown as current), naming it and why."""
    notes = []
    if run.results is not None:
        why = freshness({"provenance": _results_provenance(run) or {}}, run.checkpoints)
        if why:
            notes.append(f"results.json: {why}")
    for kind in ("results", "sweeps"):
        for key, entry in (run.evaluation.get(kind) or {}).items():
            why = freshness(entry, run.checkpoints)
            if why:
                notes.append(f"evaluation.json {key}: {why}")
    return notes


def reported_checkpoint(run: RunResults) -> str | None:
    """The checkpoint file a run's numbers are reported for (None when it has none).

    The one its results.json "best" came from, else best.pt, else last.pt (what ``evaluate`` reads).
    """
    prov = _results_provenance(run)
    if prov is not None and results_are_current(run):
        return str(prov["checkpoint_file"])
    return next((name for name in CHECKPOINT_FILES if name in run.checkpoints), None)


def current_entries(run: RunResults, kind: str = "results") -> dict[str, Mapping[str, Any]]:
    """The ``evaluation.json`` results (or ``sweeps``) of the reported checkpoint as it is now."""
    target = reported_checkpoint(run)
    return {key: entry for key, entry in (run.evaluation.get(kind) or {}).items()
            if is_current(entry, run.checkpoints) and (provenance_of(entry) or {}).get("checkpoint_file") == target}


@dataclass(frozen=True)
class Measure:
    """Clean and robust accuracy of one checkpoint on the same images: the pair every row reports.

    Attributes:
        clean: clean accuracy, % (None when no clean number on these images exists).
        robust: robust accuracy, % (None for a run measured clean only).
        label: `robust_label` of ``robust`` (None without it).
        eps_label: the L∞ radius of ``robust`` (``8/255``).
        n: how many test images both numbers are on.
        checkpoint: the checkpoint file (``checkpoints/best.pt``).
        checkpoint_sha256: its sha256.
        source: where the numbers are stored (``evaluation.json best/autoattack/eps=8/255/n=200``).
        rank: how close ``robust`` is to standard AutoAttack: 0 standard, 1 an AutoAttack subset,
            2 an evaluated PGD, 3 the PGD-20 of training's final report, 4 clean only.
        breakdown: accuracy after each attack (AutoAttack only).
    """

    clean: float | None
    robust: float | None
    label: str | None
    eps_label: str | None
    n: int
    checkpoint: str
    checkpoint_sha256: str
    source: str
    rank: int
    breakdown: Mapping[str, float] | None = None


def _measure(entry: Mapping[str, Any], clean: float | None, source: str, rank: int,
             labelled: Mapping[str, Any] | None = None) -> Measure:
    prov = provenance_of(entry) or {}
    robust = entry.get("accuracy")
    return Measure(None if clean is None else float(clean), None if robust is None else float(robust),
                   robust_label(labelled or entry), entry.get("eps_label"), int(prov.get("n", entry.get("n", 0))),
                   str(prov.get("checkpoint_file")), str(prov.get("checkpoint_sha256")), source, rank,
                   entry.get("breakdown"))


def own_eps_label(run: RunResults) -> str:
    """The ε a run is judged at: its own training ε if it trained adversarially, else the poster's 8/255.

    An MNIST-scale run trained at ε 0.1 and judged at CIFAR-10's 8/255 would report a number nobody asked for.
    """
    return _label_or_poster(run.config.get("eps"))


def results_eps_label(run: RunResults) -> str:
    """The ε of the PGD-20 in the run's ``results.json``: its provenance's (8/255 before it was recorded)."""
    return _label_or_poster((_results_provenance(run) or {}).get("eps"))


def _label_or_poster(eps: Any) -> str:
    return label_of_eps(float(eps)) if isinstance(eps, (int, float)) and eps > 0 else ROBUST_EPS_LABEL


def headline(run: RunResults, eps_label: str | None = None) -> Measure | None:
    """The run's clean and robust accuracy at ``eps_label`` (default `own_eps_label`), from one checkpoint.

    In order of preference, all current and on the reported checkpoint: an AutoAttack result (the
    standard suite first, then more attacks, then more images; clean from its own first pass); an
    evaluated PGD result with a clean result on the same images; the PGD-20 and clean accuracy of
    training's final report (``results.json``, labelled as a fallback); clean accuracy alone.
    """
    eps_label = eps_label or own_eps_label(run)
    entries = current_entries(run)
    at_eps = {k: e for k, e in entries.items() if e.get("eps_label") == eps_label}
    autoattack = [(k, e) for k, e in at_eps.items() if e.get("attack") == "autoattack"]
    if autoattack:
        key, entry = max(autoattack, key=lambda ke: (is_standard_autoattack(ke[1]),
                                                     len((provenance_of(ke[1]) or {}).get("attacks", [])),
                                                     ke[1].get("n", 0)))
        return _measure(entry, (entry.get("breakdown") or {}).get("clean"), f"evaluation.json {key}",
                        0 if is_standard_autoattack(entry) else 1)
    pgd = [(k, e) for k, e in at_eps.items() if e.get("attack") == "pgd"]
    if pgd:
        key, entry = max(pgd, key=lambda ke: ke[1].get("n", 0))
        prov = provenance_of(entry) or {}
        clean = next((e["accuracy"] for e in entries.values()
                      if e.get("attack") == "clean" and same_images(provenance_of(e) or {}, prov)), None)
        return _measure(entry, clean, f"evaluation.json {key}", 2, {**entry, "fallback": True})
    if run.results is None or not results_are_current(run):
        return None
    best, prov = run.results.get("best") or {}, dict(_results_provenance(run) or {})
    if best.get("test_pgd20_acc") is not None and eps_label == results_eps_label(run):
        entry = {"attack": "pgd", "accuracy": best["test_pgd20_acc"], "eps_label": eps_label,
                 "provenance": {**prov, "attacks": ["pgd-20"]}}
        return _measure(entry, best.get("test_acc"), "results.json", 3, {**entry, "fallback": True})
    return Measure(best.get("test_acc"), None, None, None, int(prov.get("n", 0)), str(prov.get("checkpoint_file")),
                   str(prov.get("checkpoint_sha256")), "results.json", 4)


# ---------------------------------------------------------------------------------------------------
# Runs table


@dataclass(frozen=True)
class RunRow:
    """One run's headline: what it is, its current clean/robust pair and what is stale.

    ``clean``, ``robust``, ``robust_label``, ``n_images``, ``checkpoint`` come from `headline` (None
    when the run has no current number); ``stale`` lists the results left out, with why.
    """

    id: str
    label: str
    method: str | None
    model: str | None
    dataset: str | None
    seed: int | None
    clean: float | None
    robust: float | None
    robust_label: str | None
    eps_label: str | None
    n_images: int | None
    checkpoint: str | None
    source: str | None
    stale: tuple[str, ...]


def run_rows(runs: Iterable[RunResults], eps_label: str | None = None) -> list[RunRow]:
    """One `RunRow` per run, in the order given."""
    rows = []
    for run in runs:
        m = headline(run, eps_label)
        rows.append(RunRow(
            run.id, run.label, run.get("method"), run.get("model"), run.get("dataset"), run.get("seed"),
            clean=m.clean if m else None, robust=m.robust if m else None, robust_label=m.label if m else None,
            eps_label=m.eps_label if m else None, n_images=m.n if m else None,
            checkpoint=m.checkpoint if m else None, source=m.source if m else None, stale=tuple(stale_notes(run))))
    return rows


# ---------------------------------------------------------------------------------------------------
# Figure 7: clean against robust, per method


def mean_std(values: Sequence[float]) -> str:
    """``mean ± std`` (sample std; just the mean for a single seed; "—" for none)."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.2f} (1 seed)"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _mean(values: Sequence[float]) -> float | None:
    return statistics.mean(values) if values else None


def _std(values: Sequence[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def _comparable(measures: Sequence[Measure]) -> tuple[str | None, list[Measure]]:
    """The robust label of the best-ranked measure and the seeds measured alike (averaged together).

    Alike means the same label *and* the same number of test images: PGD-20 on 500 images in one seed
    and on 2,000 in another are different numbers. Of the best-ranked label's image counts, the one
    measured on most seeds wins (then the larger count).
    """
    robust = [m for m in measures if m.robust is not None]
    if not robust:
        return None, [m for m in measures if m.clean is not None]
    label = min(robust, key=lambda m: m.rank).label
    by_images: dict[int, list[Measure]] = {}
    for m in robust:
        if m.label == label:
            by_images.setdefault(m.n, []).append(m)
    return label, max(by_images.items(), key=lambda item: (len(item[1]), item[0]))[1]


@dataclass(frozen=True)
class RobustnessRow:
    """One method's clean and robust accuracy, mean and sample std over the seeds measured alike.

    ``robust_label`` names what ``robust_*`` measured; only seeds measured by it count (``n_seeds`` of
    ``seeds_total``), clean from the same seeds, checkpoints and images; ``n_images`` lists the image
    counts involved.
    """

    method: str
    model: str
    dataset: str
    robust_label: str | None
    eps_label: str | None
    n_seeds: int
    seeds_total: int
    clean_mean: float | None
    clean_std: float | None
    robust_mean: float | None
    robust_std: float | None
    n_images: tuple[int, ...]
    runs: tuple[str, ...]


@dataclass(frozen=True)
class RobustnessPanel:
    """Figure 7 for one data set: our rows and the references measured on that data set (maybe none)."""

    dataset: str
    rows: tuple[RobustnessRow, ...]
    references: tuple[ReferencePoint, ...]


def _recipe_order(method: str) -> tuple[int, str]:
    """Methods as the recipes list them (the poster's, then the literature's), others after, by name."""
    order = list(dict.fromkeys(spec.method for figure in RECIPES for spec in RECIPES.get(figure).runs))
    return (order.index(method), "") if method in order else (len(order), method)


def robustness_rows(runs: Iterable[RunResults], eps_label: str | None = None) -> list[RobustnessRow]:
    """Finished runs with a robust number, grouped by (method, model, dataset), in `_recipe_order`."""
    groups: dict[tuple[str, str, str], list[tuple[RunResults, Measure]]] = {}
    for run in runs:
        m = headline(run, eps_label)
        if m is None or m.robust is None:
            continue
        key = (str(run.get("method")), str(run.get("model")), str(run.get("dataset")))
        groups.setdefault(key, []).append((run, m))
    rows = []
    for (method, model, dataset), members in groups.items():
        label, chosen = _comparable([m for _, m in members])
        clean = [m.clean for m in chosen if m.clean is not None]
        robust = [m.robust for m in chosen if m.robust is not None]
        rows.append(RobustnessRow(method, model, dataset, label, chosen[0].eps_label if chosen else None, len(chosen),
                                  len(members), _mean(clean), _std(clean), _mean(robust), _std(robust),
                                  tuple(sorted({m.n for m in chosen})),
                                  tuple(r.label for r, m in members if m in chosen)))
    return sorted(rows, key=lambda row: (_recipe_order(row.method), row.model, row.dataset))


def robustness_panels(runs: Iterable[RunResults], eps_label: str | None = None) -> list[RobustnessPanel]:
    """`robustness_rows` split by data set; each panel carries the references measured on its data set only."""
    by_dataset: dict[str, list[RobustnessRow]] = {}
    for row in robustness_rows(runs, eps_label):
        by_dataset.setdefault(row.dataset, []).append(row)
    return [RobustnessPanel(dataset, tuple(rows), tuple(reference_points(dataset, eps_label or ROBUST_EPS_LABEL)))
            for dataset, rows in sorted(by_dataset.items())]


@dataclass(frozen=True)
class EpsCurveRow:
    """PGD-20 accuracy of one run at one ε (ε = 0 is clean accuracy on the same images)."""

    run: str
    id: str
    method: str | None
    dataset: str | None
    checkpoint: str
    eps: float
    eps_label: str
    accuracy: float
    n: int


def eps_curve_rows(runs: Iterable[RunResults]) -> list[EpsCurveRow]:
    """Each run's current ε sweep of its reported checkpoint, long format.

    The sweep on the images of the run's `headline` when there is one (so a curve and the Figure-7
    point beside it share their images), else the sweep on the most images.
    """
    rows = []
    for run in runs:
        sweeps = list(current_entries(run, "sweeps").values())
        if not sweeps:
            continue
        m = headline(run)
        sweep = max(sweeps, key=lambda s: (m is not None and _on_images_of(s, m), s.get("n", 0)))
        checkpoint = str((provenance_of(sweep) or {}).get("checkpoint_file"))
        for eps, label, accuracy in zip(sweep["eps"], sweep["eps_labels"], sweep["accuracy"]):
            rows.append(EpsCurveRow(run.label, run.id, run.get("method"), run.get("dataset"), checkpoint, float(eps),
                                    label, float(accuracy), int(sweep.get("n", 0))))
    return rows


def _on_images_of(result: Mapping[str, Any], m: Measure) -> bool:
    prov = provenance_of(result) or {}
    return (prov.get("checkpoint_sha256"), prov.get("n"), prov.get("indices")) == (m.checkpoint_sha256, m.n, None)


@dataclass(frozen=True)
class BreakdownRow:
    """Accuracy after one stage of an AutoAttack run (``clean`` first), for the run's headline entry."""

    run: str
    id: str
    method: str | None
    robust_label: str
    eps_label: str
    n: int
    order: int
    stage: str
    accuracy: float


def breakdown_rows(runs: Iterable[RunResults], eps_label: str | None = None) -> list[BreakdownRow]:
    """Per run, the stages of the AutoAttack result its headline reports (runs without one give none)."""
    rows = []
    for run in runs:
        m = headline(run, eps_label)
        if m is None or not m.breakdown:
            continue
        for order, (stage, accuracy) in enumerate(m.breakdown.items()):
            rows.append(BreakdownRow(run.label, run.id, run.get("method"), str(m.label), m.eps_label, m.n, order, stage,
                                     float(accuracy)))
    return rows


# ---------------------------------------------------------------------------------------------------
# The poster's tables


@dataclass(frozen=True)
class TableRow:
    """One cell pair of a poster table: ours (mean ± std over seeds measured alike) and the poster's.

    ``metric`` is the poster's (``test_acc``, ``autoattack_acc``); ``label`` says what we measured
    (``clean``, ``AutoAttack``, ``APGD-CE``, ``PGD-20 (fallback: AutoAttack not run)``). ``poster``
    and ``literature`` (the published number of the run's method, ``literature_source`` naming who
    reports it) are None unless the runs are on the data set they were measured on. ``n_images``
    lists the image counts behind ``ours``; ``stale`` counts seeds with results left out as stale;
    ``parameters`` (weights without biases) and ``parameters_with_biases`` only for Figure 1.
    """

    run: str
    metric: str
    label: str
    mean: float | None
    std: float | None
    n_seeds: int
    seeds_total: int
    n_images: tuple[int, ...]
    poster: float | None
    literature: float | None
    literature_source: str | None
    parameters: int | None
    parameters_with_biases: int | None
    stale: int

    @property
    def ours(self) -> str:
        """``mean ± std`` as printed."""
        if self.mean is None:
            return "—"
        if self.std is None:
            return f"{self.mean:.2f} ({self.n_seeds} seed{'s' if self.n_seeds != 1 else ''})"
        return f"{self.mean:.2f} ± {self.std:.2f}"


@dataclass(frozen=True)
class PosterTable:
    """One figure of the poster: its rows, our data sets and whether the poster's numbers compare."""

    figure: str
    title: str
    poster_dataset: str | None
    datasets: tuple[str, ...]
    rows: tuple[TableRow, ...]

    @property
    def comparable(self) -> bool:
        """Whether our runs are on the poster's data set (or there are none yet)."""
        return all(d == self.poster_dataset for d in self.datasets)


def recipe_of(run: RunResults) -> tuple[str, str] | None:
    """(figure, run name) of a recipe's run: from ``config["extras"]``, else from ``<figure>/seed<N>/<run>``."""
    extras = run.config.get("extras") or {}
    if extras.get("recipe") in RECIPES and extras.get("run"):
        return str(extras["recipe"]), str(extras["run"])
    parts = run.id.split("/")
    if len(parts) >= 3 and parts[-3] in RECIPES and parts[-2].startswith("seed"):
        return parts[-3], parts[-1]
    return None


def _table_rows(figure: str, spec: RunSpec, seeds: list[RunResults], comparable: bool,
                show_parameters: bool) -> list[TableRow]:
    name = spec.name
    metrics = dict.fromkeys(m for values in poster_numbers(figure).values() for m in values) or {"test_acc": None}
    numbers = {metric: poster_numbers(figure).get(name, {}).get(metric) for metric in metrics}
    published = literature_point(spec.method, poster_dataset(figure) or "") if comparable else None
    measures = [m for r in seeds if (m := headline(r)) is not None]
    stale = sum(1 for r in seeds if stale_notes(r))
    counts = next(((r.results.get("parameters_without_biases"), r.results.get("parameters")) for r in seeds
                   if r.results), (None, None))
    robust_label, chosen = _comparable(measures) if "autoattack_acc" in metrics else ("", measures)
    rows = []
    for metric, poster in numbers.items():
        if metric == "autoattack_acc":
            values, label = [m.robust for m in chosen if m.robust is not None], robust_label or "AutoAttack"
            literature = published.robust if published else None
        else:
            values = [m.clean for m in chosen if m.clean is not None]
            label, literature = "clean", published.clean if published else None
        rows.append(TableRow(name, metric, label, _mean(values), _std(values), len(values), len(seeds),
                             tuple(sorted({m.n for m in chosen})), poster if comparable else None, literature,
                             f"{published.name}, {published.source}" if published else None,
                             *(counts if show_parameters else (None, None)), stale))
    return rows


def poster_tables(runs: Iterable[RunResults]) -> list[PosterTable]:
    """Figures 1, 2, 4 and 7, every recipe's table with all its rows, ours grouped by run name over seeds.

    The poster's numbers show before anything is trained; ours come from finished recipe runs.
    """
    found: dict[str, dict[str, list[RunResults]]] = {}
    for run in runs:
        member = recipe_of(run)
        if member is not None and run.results is not None:
            found.setdefault(member[0], {}).setdefault(member[1], []).append(run)
    tables = []
    for figure in RECIPES:
        recipe = RECIPES.get(figure)
        by_run = found.get(figure, {})
        datasets = tuple(sorted({str(r.get("dataset")) for seeds in by_run.values() for r in seeds}))
        target = poster_dataset(figure) or recipe.dataset
        comparable = all(d == target for d in datasets)
        rows = [row for spec in recipe.runs
                for row in _table_rows(figure, spec, by_run.get(spec.name, []), comparable,
                                       recipe.show_parameters)]
        tables.append(PosterTable(figure, recipe.title, target, datasets, tuple(rows)))
    return tables


# ---------------------------------------------------------------------------------------------------
# Text (the CLI)


def collect(folder: Path) -> tuple[list[RunResults], list[str]]:
    """Every run under ``folder`` with a ``config.json`` (any depth), and one line per run that could not be read."""
    runs, problems = [], []
    for config in sorted(folder.rglob(CONFIG_FILE)):
        root = config.parent
        run_id = root.relative_to(folder).as_posix()
        try:
            runs.append(RunResults.read(RunFolder(root, confine=folder), id=run_id, label=run_id))
        except RunFileError as exc:
            problems.append(f"{run_id}: {exc}")
    return runs, problems


def _cell(row: TableRow) -> str:
    images = f" on {'/'.join(str(n) for n in row.n_images)} images" if row.n_images else ""
    poster = f" (poster {row.poster:.2f})" if row.poster is not None else ""
    literature = f" ({row.literature_source}: {row.literature:.2f})" if row.literature is not None else ""
    return f"{row.label} {row.ours}{images}{poster}{literature}"


def format_table(table: PosterTable) -> list[str]:
    """A poster table as lines: one per run, its cells side by side."""
    measured = ", ".join(table.datasets) or "nothing yet"
    head = f"{table.figure}: {table.title} — measured on {measured}"
    if not table.comparable:
        head += f"; the poster's numbers are on {table.poster_dataset}, so they are left out"
    lines = [head]
    for name in dict.fromkeys(r.run for r in table.rows if r.seeds_total):  # runs not trained yet stay out
        cells = [r for r in table.rows if r.run == name]
        text = "; ".join(_cell(r) for r in cells)
        first = cells[0]
        if first.parameters is not None:
            text += f"; {first.parameters:,} weights"
            text += f" ({first.parameters_with_biases:,} with biases)" if first.parameters_with_biases else ""
        stale = f", {first.stale} stale" if first.stale else ""
        used = max(r.n_seeds for r in cells)  # seeds measured alike (others are left out, never averaged in)
        seeds = f"{used} of {first.seeds_total}" if used != first.seeds_total else f"{first.seeds_total}"
        lines.append(f"  {name:14s} {text}  [{seeds} seed(s){stale}]")
    return lines


def format_curves(rows: Sequence[EpsCurveRow]) -> list[str]:
    """One line per run: PGD-20 accuracy at each ε of its sweep, and how many images."""
    lines = []
    for run in dict.fromkeys(r.run for r in rows):
        points = [r for r in rows if r.run == run]
        pairs = ", ".join(f"{r.eps_label} {r.accuracy:.2f}" for r in points)
        lines.append(f"  {run}: PGD-20 accuracy by ε on {points[0].n} images: {pairs}")
    return lines


def format_panels(panels: Sequence[RobustnessPanel]) -> list[str]:
    """Figure 7's panels as lines, references beside the runs of their data set only."""
    lines = []
    for panel in panels:
        lines.append(f"robustness on {panel.dataset}:")
        for row in panel.rows:
            images = "/".join(str(n) for n in row.n_images)
            lines.append(f"  {row.method:14s} {row.model} clean {_pm(row.clean_mean, row.clean_std)}, "
                         f"{row.robust_label} at ε {row.eps_label} {_pm(row.robust_mean, row.robust_std)} "
                         f"on {images} images  [{row.n_seeds} of {row.seeds_total} seed(s)]")
        for ref in panel.references:
            lines.append(f"  reference {ref.name:10s} clean {ref.clean:.2f}, {ref.robust_label} {ref.robust:.2f}"
                         f"  [{ref.source}]")
        if not panel.references:
            lines.append(f"  (no published reference on {panel.dataset})")
    return lines


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "—"
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def summarize(folder: Path) -> str:
    """The text of every figure's table found under ``folder``, then Figure 7's panels, ε curves and stale results."""
    if not folder.is_dir():
        raise TrainersError(f"{folder} is not a folder")
    runs, problems = collect(folder)
    finished = [r for r in runs if r.results is not None]
    if not finished:
        raise TrainersError(f"no finished runs under {folder} (expected run folders holding results.json)")
    blocks = ["\n".join(format_table(t)) for t in poster_tables(finished) if t.datasets]
    panels = robustness_panels(finished)
    if panels:
        blocks.append("\n".join(format_panels(panels)))
    curves = eps_curve_rows(finished)
    if curves:
        blocks.append("\n".join(["ε curves:", *format_curves(curves)]))
    stale = [f"  {r.id}: {note}" for r in run_rows(finished) for note in r.stale]
    if stale or problems:
        blocks.append("\n".join(["left out (stale or unreadable; evaluate or retrain to refresh):", *stale,
                                 *(f"  {p}" for p in problems)]))
    return "\n\n".join(blocks)
