"""Summary rows: clean and robust paired from one checkpoint and the same images, stale results left out,
references only beside runs on their data set. Runs are built as their files store them."""

from __future__ import annotations

from typing import Any

import pytest

from trainers.references import LITERATURE, poster_points
from trainers.summarize import (
    RunResults,
    breakdown_rows,
    eps_curve_rows,
    format_table,
    headline,
    poster_tables,
    robustness_panels,
    run_rows,
)

BEST, LAST = "checkpoints/best.pt", "checkpoints/last.pt"
SHA = {BEST: "b" * 64, LAST: "1" * 64}
STANDARD = ["apgd-ce", "apgd-t", "fab-t", "square"]


def prov(file: str = BEST, *, n: int, attacks: list[str], eps: float = 8 / 255, sha: str | None = None,
         dataset: str = "cifar10") -> dict[str, Any]:
    return {"checkpoint": file.split("/")[-1][:-3], "checkpoint_file": file, "checkpoint_sha256": sha or SHA[file],
            "dataset": dataset, "split": "test", "n": n, "indices": None, "eps": eps, "attacks": attacks,
            "precision": "float32", "seed": 0, "batch_size": 100}


def autoattack(robust: float, clean: float, *, n: int = 200, attacks: list[str] = STANDARD, file: str = BEST,
               sha: str | None = None, dataset: str = "cifar10") -> dict[str, Any]:
    breakdown = {"clean": clean, **{a: robust + len(attacks) - i for i, a in enumerate(attacks, 1)}}
    return {"checkpoint": file[12:-3], "attack": "autoattack", "accuracy": robust, "eps": 8 / 255, "eps_label": "8/255",
            "n": n, "breakdown": breakdown, "attacks_to_run": attacks,
            "version": "standard" if attacks == STANDARD else "custom subset",
            "provenance": prov(file, n=n, attacks=attacks, sha=sha, dataset=dataset)}


def single(attack: str, accuracy: float, *, n: int, file: str = BEST, dataset: str = "cifar10") -> dict[str, Any]:
    eps = 0.0 if attack == "clean" else 8 / 255
    attacks = ["clean"] if attack == "clean" else ["pgd-20"]
    return {"checkpoint": file[12:-3], "attack": attack, "accuracy": accuracy, "eps": eps,
            "eps_label": "0" if attack == "clean" else "8/255", "n": n,
            "provenance": prov(file, n=n, attacks=attacks, eps=eps, dataset=dataset)}


def run(name: str, method: str, seed: int, clean: float, pgd: float | None = None, *, dataset: str = "cifar10",
        entries: dict[str, dict[str, Any]] | None = None, sweeps: dict[str, dict[str, Any]] | None = None,
        recipe: str | None = "fig7", checkpoints: dict[str, str] | None = None,
        results_sha: str | None = None) -> RunResults:
    best = {"test_acc": clean, **({"test_pgd20_acc": pgd} if pgd is not None else {})}
    attacks = ["clean", "pgd-20"] if pgd is not None else ["clean"]
    results = {"method": method, "model": "resnet18", "dataset": dataset, "seed": seed, "best": best, "last": best,
               "parameters_without_biases": 1000,
               "provenance": {"best": prov(BEST, n=1000, attacks=attacks, sha=results_sha, dataset=dataset),
                              "last": prov(LAST, n=1000, attacks=attacks, dataset=dataset)}}
    config = {"method": method, "model": "resnet18", "dataset": dataset, "seed": seed,
              "extras": {"recipe": recipe, "run": name} if recipe else {}}
    evaluation = {"results": entries or {}, "sweeps": sweeps or {}, "flags": []}
    return RunResults(f"{recipe}/seed{seed}/{name}", f"{name} s{seed}", config, results, evaluation,
                      dict(SHA if checkpoints is None else checkpoints))


def test_clean_and_robust_come_from_the_same_autoattack_images_not_from_results_json():
    at = run("at", "at", 0, clean=90.0, pgd=50.0,
             entries={"best/autoattack/eps=8/255/n=200": autoattack(45.0, clean=88.0)})
    m = headline(at)
    assert (m.clean, m.robust, m.n, m.label, m.checkpoint) == (88.0, 45.0, 200, "AutoAttack", BEST)
    fig7 = next(t for t in poster_tables([at]) if t.figure == "fig7")
    rows = {r.metric: r for r in fig7.rows if r.run == "at"}
    assert rows["test_acc"].mean == 88.0 and rows["autoattack_acc"].mean == 45.0
    assert rows["test_acc"].n_images == rows["autoattack_acc"].n_images == (200,)
    assert [(r.stage, r.accuracy) for r in breakdown_rows([at])][0] == ("clean", 88.0)


def test_an_evaluated_pgd_pairs_with_the_clean_result_on_the_same_images_only():
    entries = {"best/pgd/eps=8/255/n=200": single("pgd", 51.0, n=200),
               "best/clean/eps=0/n=1000": single("clean", 90.0, n=1000)}
    m = headline(run("at", "at", 0, clean=90.0, pgd=50.0, entries=entries))
    assert (m.clean, m.robust, m.n) == (None, 51.0, 200)  # the clean result is on other images
    entries["best/clean/eps=0/n=200"] = single("clean", 87.5, n=200)
    m = headline(run("at", "at", 0, clean=90.0, pgd=50.0, entries=entries))
    assert (m.clean, m.robust, m.label) == (87.5, 51.0, "PGD-20 (fallback: AutoAttack not run)")


def test_without_evaluation_the_pgd20_of_training_stands_in_labelled_as_a_fallback():
    m = headline(run("at", "at", 0, clean=84.0, pgd=50.0))
    assert (m.clean, m.robust, m.n, m.source) == (84.0, 50.0, 1000, "results.json")
    assert m.label == "PGD-20 (fallback: AutoAttack not run)"
    baseline = headline(run("baseline", "baseline", 0, clean=94.0, recipe="fig4"))
    assert (baseline.clean, baseline.robust, baseline.label) == (94.0, None, None)


def test_results_of_another_checkpoint_or_of_changed_bytes_are_never_current():
    entries = {"last/autoattack/eps=8/255/n=200": autoattack(30.0, clean=70.0, file=LAST),  # not the reported one
               "best/autoattack/eps=8/255/n=500": autoattack(55.0, clean=99.0, n=500, sha="0" * 64)}  # stale
    at = run("at", "at", 0, clean=84.0, pgd=50.0, entries=entries)
    m = headline(at)
    assert (m.clean, m.robust, m.source) == (84.0, 50.0, "results.json")
    (row,) = run_rows([at])
    assert len(row.stale) == 1 and "best/autoattack/eps=8/255/n=500" in row.stale[0] and "changed" in row.stale[0]
    retrained = run("at", "at", 0, clean=84.0, pgd=50.0, results_sha="2" * 64)  # results.json of older weights
    assert headline(retrained) is None and "results.json" in run_rows([retrained])[0].stale[0]
    legacy = run("at", "at", 0, clean=84.0, pgd=50.0,
                 entries={"best/autoattack/eps=8/255/n=200": {k: v for k, v in autoattack(45.0, 88.0).items()
                                                             if k != "provenance"}})
    assert headline(legacy).source == "results.json"
    assert "no valid checkpoint fingerprint" in run_rows([legacy])[0].stale[0]


def test_seeds_measured_differently_are_not_averaged_together():
    evaluated = run("at", "at", 0, clean=84.0, pgd=50.0,
                    entries={"best/autoattack/eps=8/255/n=200": autoattack(46.0, clean=83.0)})
    fallback = run("at", "at", 1, clean=85.0, pgd=52.0)
    (panel,) = robustness_panels([evaluated, fallback])
    (row,) = panel.rows
    assert (row.robust_label, row.n_seeds, row.seeds_total, row.robust_mean, row.clean_mean) == (
        "AutoAttack", 1, 2, 46.0, 83.0)
    subset = run("at", "at", 0, clean=84.0, pgd=50.0,
                 entries={"best/autoattack/eps=8/255/n=200": autoattack(48.0, clean=83.0, attacks=["apgd-ce"])})
    assert robustness_panels([subset])[0].rows[0].robust_label == "APGD-CE"
    # the figure's table says how many seeds its means are over, not how many exist
    table = next(t for t in poster_tables([evaluated, fallback]) if t.figure == "fig7")
    (line,) = [line for line in format_table(table) if line.strip().startswith("at ")]
    assert "AutoAttack 46.00 (1 seed)" in line and line.endswith("[1 of 2 seed(s)]")

    # the same kind of number on other images is not averaged in either: the count most seeds share wins
    on_500 = [run("at", "at", s, clean=80.0, pgd=50.0,
                  entries={"best/pgd/eps=8/255/n=500": single("pgd", 40.0 + s, n=500),
                           "best/clean/eps=0/n=500": single("clean", 80.0, n=500)}) for s in (0, 1)]
    on_1000 = run("at", "at", 2, clean=90.0, pgd=60.0)  # training's PGD-20 on 1,000 images
    (row,) = robustness_panels([*on_500, on_1000])[0].rows
    assert (row.robust_label, row.n_images, row.n_seeds, row.seeds_total, row.robust_mean) == (
        "PGD-20 (fallback: AutoAttack not run)", (500,), 2, 3, 40.5)
    (row,) = robustness_panels([on_500[0], on_1000])[0].rows  # one seed each: the larger count
    assert (row.n_images, row.robust_mean) == ((1000,), 60.0)


def test_figure7_lists_methods_in_the_recipes_order_not_alphabetically():
    runs = [run(name, name, 0, clean=80.0, pgd=50.0) for name in ("trades", "at-tfkd-self", "zz-mine", "at", "ard")]
    assert [row.method for row in robustness_panels(runs)[0].rows] == ["at", "at-tfkd-self", "trades", "ard", "zz-mine"]


def test_reference_points_only_beside_runs_on_their_data_set():
    cifar = run("at", "at", 0, clean=84.0, pgd=50.0)
    fashion = run("at", "at", 0, clean=80.0, pgd=60.0, dataset="fashion-mnist", recipe=None)
    panels = {p.dataset: p for p in robustness_panels([cifar, fashion])}
    assert set(panels) == {"cifar10", "fashion-mnist"}
    assert panels["fashion-mnist"].references == ()
    names = [p.name for p in panels["cifar10"].references]
    assert names[:4] == [p.name for p in poster_points("fig7")] and names[4:] == [p.name for p in LITERATURE]
    assert {p.source for p in panels["cifar10"].references} >= {"poster", "literature (as compiled in later papers)"}

    on_fashion = run("at", "at", 0, clean=80.0, pgd=60.0, dataset="fashion-mnist")
    table = next(t for t in poster_tables([on_fashion]) if t.figure == "fig7")
    assert not table.comparable and table.datasets == ("fashion-mnist",) and table.poster_dataset == "cifar10"
    assert all(r.poster is None for r in table.rows)
    table = next(t for t in poster_tables([cifar]) if t.figure == "fig7")
    assert table.comparable and {r.metric: r.poster for r in table.rows if r.run == "at"} == {
        "test_acc": 84.22, "autoattack_acc": 46.99}
    trades = [run("trades", "trades", 0, clean=82.0, pgd=50.0, dataset=d) for d in ("cifar10", "fashion-mnist")]
    for one, expected in zip(trades, ({"test_acc": 82.41, "autoattack_acc": 48.37}, {"test_acc": None,
                                                                                      "autoattack_acc": None})):
        table = next(t for t in poster_tables([one]) if t.figure == "fig7")
        assert {r.metric: r.literature for r in table.rows if r.run == "trades"} == expected
        assert all(r.poster is None for r in table.rows if r.run == "trades")  # the poster has no TRADES
    fig1 = next(t for t in poster_tables([]) if t.figure == "fig1")
    assert fig1.poster_dataset == "mnist" and fig1.rows[0].poster == pytest.approx(98.98)  # nothing to mismatch yet


def test_eps_curves_come_from_current_sweeps_of_the_reported_checkpoint():
    sweep = {"checkpoint": "best", "n": 200, "eps": [0, 8 / 255], "eps_labels": ["0", "8/255"],
             "accuracy": [88.0, 50.0], "num_classes": 10, "provenance": prov(BEST, n=200, attacks=["clean", "pgd-20"])}
    stale = {**sweep, "n": 300, "provenance": prov(BEST, n=300, attacks=["clean", "pgd-20"], sha="9" * 64)}
    rows = eps_curve_rows([run("at", "at", 0, 84.0, 50.0, sweeps={"a": sweep, "b": stale})])
    assert [(r.eps_label, r.accuracy, r.n) for r in rows] == [("0", 88.0, 200), ("8/255", 50.0, 200)]
    # beside an AutoAttack point on 100 images, the curve on those 100 images wins over one on more
    small = {**sweep, "n": 100, "accuracy": [87.0, 49.0], "provenance": prov(BEST, n=100, attacks=["clean", "pgd-20"])}
    at = run("at", "at", 0, 84.0, 50.0, sweeps={"a": sweep, "c": small},
             entries={"best/autoattack/eps=8/255/n=100": autoattack(45.0, clean=87.0, n=100)})
    assert {r.n for r in eps_curve_rows([at])} == {100}


def test_a_dashboard_run_entry_converts_and_its_checkpoints_are_fingerprinted(tmp_path):
    from types import SimpleNamespace

    from trainers.provenance import file_sha256

    root = tmp_path / "runs" / "fig7" / "seed0" / "at"
    (root / "checkpoints").mkdir(parents=True)
    (root / "checkpoints" / "best.pt").write_bytes(b"weights")
    entry = SimpleNamespace(id="fig7/seed0/at", label="at s0", path=root, config={"method": "at"}, results=None,
                            evaluation={"results": {}, "sweeps": {}}, files=None)
    converted = RunResults.of_run(entry)
    assert converted.checkpoints == {BEST: file_sha256(root / "checkpoints" / "best.pt")}
    assert (converted.id, converted.label, converted.get("method")) == ("fig7/seed0/at", "at s0", "at")


def test_a_run_trained_at_another_eps_is_judged_at_its_own():
    # a Fashion-MNIST run trained at ε 0.1 was once reported as if measured at CIFAR-10's 8/255
    from app.pages.runs import pgd20_accuracy

    def at_eps(entries=None):
        r = run("at", "at", 0, clean=77.0, pgd=63.0, dataset="fashion-mnist", entries=entries)
        r.config["eps"] = 0.1
        for which in ("best", "last"):
            r.results["provenance"][which]["eps"] = 0.1
        return r

    fallback = headline(at_eps())
    assert (fallback.robust, fallback.eps_label, fallback.source) == (63.0, "0.1", "results.json")
    assert pgd20_accuracy(at_eps()) == 63.0 and pgd20_accuracy(at_eps(), "8/255") is None
    aa = {**autoattack(58.0, clean=78.0, dataset="fashion-mnist"), "eps": 0.1, "eps_label": "0.1"}
    aa["provenance"]["eps"] = 0.1
    cifar_scale = autoattack(70.0, clean=78.0, dataset="fashion-mnist")  # measured at 8/255: not this run's ε
    m = headline(at_eps({"best/autoattack/eps=0.1/n=200": aa, "best/autoattack/eps=8/255/n=200": cifar_scale}))
    assert (m.robust, m.eps_label, m.label) == (58.0, "0.1", "AutoAttack")
    assert headline(at_eps({"best/autoattack/eps=8/255/n=200": cifar_scale}), "8/255").robust == 70.0
    untrained = headline(run("baseline", "baseline", 0, clean=94.0, recipe="fig4"))
    assert untrained.eps_label is None and untrained.robust is None
