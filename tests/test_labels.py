"""What a robust number is called: one rule (`trainers.labels.robust_label`) for every case."""

import pytest

from trainers.labels import robust_label


def _entry(attack, attacks, *, precision="float32", **fields):
    provenance = {"checkpoint": "best", "checkpoint_file": "checkpoints/best.pt", "checkpoint_sha256": "ab" * 32,
                  "dataset": "cifar10", "split": "test", "n": 100, "indices": None, "eps": 8 / 255,
                  "attacks": attacks, "precision": precision, "seed": 0, "batch_size": 100}
    return {"attack": attack, "accuracy": 40.0, "eps_label": "8/255", "provenance": provenance, **fields}


def test_only_the_standard_four_attack_suite_is_called_autoattack():
    standard = _entry("autoattack", ["apgd-ce", "apgd-t", "fab-t", "square"], version="standard")
    assert robust_label(standard) == "AutoAttack"


@pytest.mark.parametrize(("attacks", "label"), [
    (["apgd-ce"], "APGD-CE"),
    (["apgd-ce", "apgd-t"], "APGD-CE + APGD-T"),
    (["apgd-t", "apgd-ce", "fab-t", "square"], "APGD-T + APGD-CE + FAB-T + Square"),  # not the standard order
])
def test_a_subset_is_named_by_its_attacks(attacks, label):
    assert robust_label(_entry("autoattack", attacks, version="custom subset")) == label


def test_a_pgd_number_is_pgd_and_says_when_it_stands_in_for_autoattack():
    pgd = _entry("pgd", ["pgd-20"], steps=20)
    assert robust_label(pgd) == "PGD-20"
    assert robust_label({**pgd, "fallback": True}) == "PGD-20 (fallback: AutoAttack not run)"


def test_bf16_results_are_labelled():
    standard = _entry("autoattack", ["apgd-ce", "apgd-t", "fab-t", "square"], precision="bf16", version="standard")
    assert robust_label(standard) == "AutoAttack (bf16)"
    pgd = _entry("pgd", ["pgd-20"], precision="bf16", fallback=True)
    assert robust_label(pgd) == "PGD-20 (fallback: AutoAttack not run; bf16)"


def test_entries_written_before_provenance_are_labelled_from_their_own_fields():
    old_subset = {"attack": "autoattack", "attacks_to_run": ["apgd-ce"], "version": "custom subset",
                  "breakdown": {"clean": 90.0, "apgd-ce": 50.0}}
    assert robust_label(old_subset) == "APGD-CE"
    old_standard = {"attack": "autoattack", "version": "standard",
                    "breakdown": {"clean": 1.0, "apgd-ce": 1.0, "apgd-t": 1.0, "fab-t": 1.0, "square": 1.0}}
    assert robust_label(old_standard) == "AutoAttack"
    assert robust_label({"attack": "pgd", "steps": 10}) == "PGD-10"
