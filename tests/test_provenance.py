"""Provenance: every result names the checkpoint bytes it came from; results of other bytes are stale.

The issue's case end to end: a run evaluated, then retrained with --overwrite, re-evaluated: the numbers
are the new model's, even with the old AutoAttack resume state put back in place.
"""

import hashlib
import json
import os

import pytest
import torch

from trainers.checkpoint import load_checkpoint, save_checkpoint
from trainers.config import TrainConfig
from trainers.errors import TrainersError
from trainers.evaluate import autoattack_breakdown, robust_accuracy
from trainers.loop import train
from trainers.provenance import Provenance, file_sha256, fingerprints, freshness, of_checkpoint
from trainers.restore import data_of, restore
from trainers.robustness import evaluate_run
from trainers.run_folder import RunFolder
from trainers.summarize import RunResults, headline, run_rows

N = 24


def test_a_digest_follows_the_bytes_through_an_atomic_replace(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    path.parent.mkdir()
    path.write_bytes(b"first")
    assert file_sha256(path) == hashlib.sha256(b"first").hexdigest()
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(b"other")
    os.replace(tmp, path)  # as save_checkpoint does
    assert file_sha256(path) == hashlib.sha256(b"other").hexdigest()
    prov = of_checkpoint(tmp_path, path, dataset="mnist", n=5, eps=None, attacks=["clean"], seed=0, batch_size=5)
    assert (prov.checkpoint, prov.checkpoint_file) == ("last", "checkpoints/last.pt")
    with pytest.raises(TrainersError, match="precision"):
        prov.with_(precision="fp16")


def test_freshness_names_why_and_never_reads_outside_the_run(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "secret.pt").write_bytes(b"x")
    assert fingerprints(tmp_path / "run", ["../secret.pt"]) == {}
    prov = Provenance("best", "checkpoints/best.pt", "a" * 64, "cifar10", "test", 10, None, ["clean"], "float32", 0, 10)
    entry = {"provenance": prov.to_json()}
    assert freshness(entry, {"checkpoints/best.pt": "a" * 64}) is None
    assert "has changed" in freshness(entry, {"checkpoints/best.pt": "b" * 64})
    assert "no longer exists" in freshness(entry, {})
    assert "no valid checkpoint fingerprint" in freshness({"accuracy": 50.0}, {"checkpoints/best.pt": "a" * 64})


def _direct_accuracy(run_dir) -> float:
    restored = restore(run_dir)
    test = data_of(restored.config).test
    with torch.no_grad():
        hits = restored.model(test.images[:N].float() / 255).argmax(1) == test.labels[:N]
    return 100.0 * hits.float().mean().item()


@pytest.mark.slow
def test_retrained_with_overwrite_then_reevaluated_gives_the_new_models_numbers(tmp_path):
    run_dir = tmp_path / "run"
    folder = RunFolder(run_dir)
    options = {"method": "baseline", "model": "mlp-student", "dataset": "synthetic-mnist", "train_subset": 512,
               "out": str(run_dir), "progress": False}
    train(TrainConfig(**options, epochs=2))
    old = evaluate_run(run_dir, attacks=["clean", "autoattack"], n=N, sweep=False, attacks_to_run=["apgd-ce"],
                       show_progress=False)
    old_aa = old["results"][f"last/autoattack/eps=8/255/n={N}"]
    prov = old_aa["provenance"]
    assert prov["checkpoint_sha256"] == file_sha256(folder.last) and prov["checkpoint_file"] == "checkpoints/last.pt"
    assert (prov["dataset"], prov["split"], prov["n"], prov["indices"], prov["attacks"], prov["precision"]) == (
        "synthetic-mnist", "test", N, None, ["apgd-ce"], "float32")
    results_prov = json.loads(folder.results.read_text())["provenance"]
    assert results_prov["best"]["checkpoint_sha256"] == prov["checkpoint_sha256"]
    (state_file,) = folder.autoattack_states()
    old_state = state_file.read_text()
    assert json.loads(old_state)["settings"]["key"]["checkpoint_sha256"] == prov["checkpoint_sha256"]
    current = headline(RunResults.read(folder))
    assert (current.source, current.clean) == (f"evaluation.json last/autoattack/eps=8/255/n={N}",
                                               old_aa["breakdown"]["clean"])

    # the checkpoint's bytes change under the stored results: all of them are stale, none is shown
    saved = load_checkpoint(folder.last)
    saved["model"] = {k: torch.zeros_like(v) for k, v in saved["model"].items()}
    save_checkpoint(folder.last, saved)
    (row,) = run_rows([RunResults.read(folder)])
    assert row.clean is None and len(row.stale) == 3 and all("has changed" in note for note in row.stale)

    # the issue: retrain with --overwrite (a near-chance model), leave the old resume state behind, re-evaluate
    train(TrainConfig(**options, epochs=1, lr=1e-9), overwrite=True)
    assert not folder.evaluation.exists()
    state_file.write_text(old_state)
    new = evaluate_run(run_dir, attacks=["clean", "autoattack"], n=N, sweep=False, attacks_to_run=["apgd-ce"],
                       show_progress=False)
    clean, aa = new["results"][f"last/clean/eps=0/n={N}"], new["results"][f"last/autoattack/eps=8/255/n={N}"]
    assert aa["provenance"]["checkpoint_sha256"] == file_sha256(folder.last) != prov["checkpoint_sha256"]
    assert clean["accuracy"] == pytest.approx(_direct_accuracy(run_dir))
    assert aa["breakdown"]["clean"] == pytest.approx(clean["accuracy"]) != old_aa["breakdown"]["clean"]
    restored = restore(run_dir)
    test = data_of(restored.config).test
    fresh = autoattack_breakdown(restored.model, test.images[:N].float() / 255, test.labels[:N],
                                 attacks_to_run=["apgd-ce"], batch_size=aa["batch_size"])
    assert aa["breakdown"] == pytest.approx(fresh)
    (row,) = run_rows([RunResults.read(folder)])
    assert row.stale == () and (row.clean, row.robust, row.robust_label, row.n_images) == (
        clean["accuracy"], aa["accuracy"], "APGD-CE", N)


def test_a_bf16_run_is_scored_and_selected_in_float32(tmp_path):
    """--bf16 is for training steps: the final scores equal a float32 evaluation and say float32."""
    run_dir = tmp_path / "run"
    results = train(TrainConfig(method="at", model="mlp-student", dataset="synthetic-mnist", epochs=1, train_subset=256,
                                val_size=64, attack_steps=2, test_subset=100, bf16=True, out=str(run_dir),
                                progress=False))
    prov = results["provenance"]["best"]
    assert (prov["precision"], prov["n"], prov["attacks"]) == ("float32", 100, ["clean", "pgd-20"])
    restored = restore(run_dir / "checkpoints" / "best.pt")
    test = data_of(restored.config).test
    x, y = test.images[:100].float() / 255, test.labels[:100]
    assert results["best"]["test_acc"] == pytest.approx(robust_accuracy(restored.model, x, y, "clean"))
    assert results["best"]["test_pgd20_acc"] == pytest.approx(robust_accuracy(
        restored.model, x, y, "pgd", 8 / 255, steps=20, step_size=2 / 255, seed=0, batch_size=500))


def test_a_malformed_provenance_is_never_current():
    good = Provenance("best", "checkpoints/best.pt", "a" * 64, "cifar10", "test", 10, None, ["clean"], "float32", 0,
                      10).to_json()
    now = {"checkpoints/best.pt": "a" * 64}
    assert freshness({"provenance": good}, now) is None
    for key, bad in (("n", "ten"), ("attacks", "clean"), ("precision", "fp8"), ("indices", [1.5]), ("seed", True)):
        assert "no valid checkpoint fingerprint" in freshness({"provenance": {**good, key: bad}}, now), key


def test_a_checkpoint_digest_is_kept_beside_it_and_trusted_only_for_the_same_file(tmp_path):
    import hashlib
    import os

    from trainers import provenance

    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"weights v1")
    digest = provenance.file_sha256(ckpt)
    assert digest == hashlib.sha256(b"weights v1").hexdigest()
    sidecar = tmp_path / "best.pt.sha256"
    assert sidecar.read_text().split()[0] == digest

    provenance._digests.clear()  # a fresh process: the digest comes from the sidecar, not from the bytes
    sidecar.write_text(sidecar.read_text().replace(digest, "f" * 64))
    assert provenance.file_sha256(ckpt) == "f" * 64

    provenance._digests.clear()  # the file changed (size and mtime): the sidecar is ignored and rewritten
    ckpt.write_bytes(b"weights version 2")
    os.utime(ckpt, ns=(1, 1))
    assert provenance.file_sha256(ckpt) == hashlib.sha256(b"weights version 2").hexdigest()
    assert sidecar.read_text().split()[0] == hashlib.sha256(b"weights version 2").hexdigest()
