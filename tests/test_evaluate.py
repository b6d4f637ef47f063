"""Robustness evaluation: clean/PGD/AutoAttack on tiny real runs, merging, sanity flags, errors."""

import json

import pytest
import torch
from torch import nn

from trainers.checkpoint import load_checkpoint, save_checkpoint
from trainers.cli import main
from trainers.config import TrainConfig
from trainers.errors import TrainersError
from trainers.evaluate import autoattack_breakdown, parse_eps, robust_accuracy
from trainers.loop import train
from trainers.restore import data_of, restore
from trainers.robustness import EVALUATION_FILE, eps_sweep, evaluate_run, sanity_flags

FAST_AA = ["apgd-ce", "apgd-t"]  # the standard four take minutes on CPU; tests restrict the list


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "mlp"
    train(TrainConfig(method="baseline", model="mlp-student", dataset="synthetic-mnist", epochs=2,
                      train_subset=512, out=str(out), progress=False))
    return out


def test_clean_accuracy_equals_a_direct_computation(run):
    restored = restore(run)
    test = data_of(restored.config).test
    x, y = test.images[:100].float() / 255, test.labels[:100]
    with torch.no_grad():
        direct = (restored.model(x).argmax(1) == y).float().mean().item() * 100
    assert robust_accuracy(restored.model, x, y, "clean") == pytest.approx(direct)
    evaluation = evaluate_run(run, attacks=["clean"], n=100, sweep=False, show_progress=False)
    assert evaluation["results"]["last/clean/eps=0/n=100"]["accuracy"] == pytest.approx(direct)


def test_pgd_and_autoattack_do_not_exceed_clean_and_stay_in_the_ball(run):
    restored = restore(run)
    test = data_of(restored.config).test
    x, y = test.images[:24].float() / 255, test.labels[:24]
    eps = 8 / 255
    clean = robust_accuracy(restored.model, x, y, "clean")
    assert robust_accuracy(restored.model, x, y, "pgd", eps, steps=10) <= clean
    examples = x.clone()
    breakdown = autoattack_breakdown(restored.model, x, y, eps=eps, batch_size=12, attacks_to_run=FAST_AA,
                                     examples=examples)
    assert breakdown["clean"] == pytest.approx(clean)
    assert breakdown["apgd-t"] <= breakdown["apgd-ce"] <= clean
    assert (examples - x).abs().max() <= eps + 1e-6 and examples.min() >= 0 and examples.max() <= 1
    assert robust_accuracy(restored.model, x, y, "autoattack", eps, attacks_to_run=FAST_AA,
                           batch_size=12) == pytest.approx(breakdown["apgd-t"])


def test_an_interrupted_autoattack_resumes_from_its_state_file(run, tmp_path):
    restored = restore(run)
    test = data_of(restored.config).test
    x, y = test.images[:16].float() / 255, test.labels[:16]
    state = tmp_path / "aa.json"
    seconds: dict[str, float] = {}
    whole = autoattack_breakdown(restored.model, x, y, attacks_to_run=["apgd-ce"], batch_size=8, state_path=state,
                                 seconds=seconds)
    saved = json.loads(state.read_text())
    assert saved["accuracy"] == whole and set(seconds) == {"clean", "apgd-ce"} and saved["seconds"] == seconds
    # a state stopped after the first batch of apgd-ce, which took 1000 s: the second call only does the rest,
    # and reports the time of both calls
    saved["accuracy"].pop("apgd-ce")
    saved["queue"], saved["position"] = [i for i in range(16) if saved["robust"][i]] + [], 8
    saved["seconds"]["apgd-ce"] = 1000.0
    state.write_text(json.dumps(saved))
    again_seconds: dict[str, float] = {}
    again = autoattack_breakdown(restored.model, x, y, attacks_to_run=["apgd-ce"], batch_size=8, state_path=state,
                                 seconds=again_seconds)
    assert set(again) == {"clean", "apgd-ce"}
    assert again_seconds["clean"] == seconds["clean"] and 1000.0 <= again_seconds["apgd-ce"] < 1000.0 + 600


def test_a_second_evaluation_keeps_the_first_results(run):
    evaluate_run(run, attacks=["clean"], n=50, sweep=False, show_progress=False)
    evaluate_run(run, attacks=["autoattack"], n=20, sweep=True, attacks_to_run=["apgd-ce"], show_progress=False)
    stored = json.loads((run / EVALUATION_FILE).read_text())
    assert "last/clean/eps=0/n=50" in stored["results"]
    entry = stored["results"]["last/autoattack/eps=8/255/n=20"]
    assert entry["breakdown"]["clean"] >= entry["accuracy"] and entry["version"] == "custom subset"
    assert {"time_s", "images_per_s", "versions", "n", "eps"} <= set(entry) and entry["versions"]["pyautoattack"]
    seconds = entry["attack_seconds"]
    assert set(seconds) == {"clean", "apgd-ce"} and entry["time_s"] >= sum(seconds.values())
    sweep = stored["sweeps"]["last/pgd-20/n=20"]
    assert sweep["eps_labels"] == ["0", "2/255", "4/255", "8/255", "16/255"]


class RoundInput(nn.Module):
    """A gradient-masked model: rounding its input gives zero gradients almost everywhere."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(torch.round(x * 4) / 4)


def test_sanity_flags_fire_on_a_gradient_masked_model(run):
    restored = restore(run)
    test = data_of(restored.config).test
    x, y = test.images[:64].float() / 255, test.labels[:64]
    masked = RoundInput(restored.model).eval()
    curve = eps_sweep(masked, x, y, eps_255=(0, 2, 4))
    evaluation = {"results": {}, "sweeps": {"masked": curve}, "flags": []}
    flags = sanity_flags(evaluation)
    assert [f["flag"] for f in flags] == ["accuracy_not_falling_with_eps"]
    honest = {"results": {}, "sweeps": {"honest": eps_sweep(restored.model, x, y, eps_255=(0, 8, 16))}, "flags": []}
    assert sanity_flags(honest) == []
    fake = {"results": {"a": {"checkpoint": "last", "attack": "clean", "eps": 0.0, "eps_label": "0", "n": 5,
                              "accuracy": 50.0},
                        "b": {"checkpoint": "last", "attack": "pgd", "eps": 0.03, "eps_label": "8/255", "n": 5,
                              "accuracy": 40.0},
                        "c": {"checkpoint": "last", "attack": "autoattack", "eps": 0.03, "eps_label": "8/255", "n": 5,
                              "accuracy": 60.0}}, "sweeps": {}}
    assert {f["flag"] for f in sanity_flags(fake)} == {"robust_above_clean", "autoattack_above_pgd"}


def test_bad_eps_a_foreign_architecture_and_a_truncated_checkpoint_write_nothing(run, tmp_path, capsys):
    for bad in ("0", "2", "-8/255", "eight"):
        with pytest.raises(TrainersError, match="eps"):
            parse_eps(bad)
    saved = load_checkpoint(run / "checkpoints" / "last.pt")
    saved["config"]["model"] = "mlp-teacher"
    save_checkpoint(tmp_path / "foreign" / "checkpoints" / "last.pt", saved)
    with pytest.raises(TrainersError, match="does not fit a mlp-teacher"):
        evaluate_run(tmp_path / "foreign", attacks=["clean"])
    truncated = tmp_path / "cut" / "checkpoints" / "last.pt"
    truncated.parent.mkdir(parents=True)
    truncated.write_bytes((run / "checkpoints" / "last.pt").read_bytes()[:1000])
    assert main(["evaluate", str(tmp_path / "cut"), "--attacks", "clean"]) == 2
    assert "cannot read checkpoint" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "foreign"), "--eps", "3"]) == 2
    assert "eps must lie in (0, 1]" in capsys.readouterr().err
    for folder in ("foreign", "cut"):
        assert not (tmp_path / folder / EVALUATION_FILE).exists()


def test_summarize_shows_autoattack_and_eps_curves_for_fig7(tmp_path):
    from trainers.summarize import summarize

    run_dir = tmp_path / "fig7" / "seed0" / "at"
    train(TrainConfig(method="at", model="mlp-student", dataset="synthetic-mnist", epochs=1, train_subset=256,
                      val_size=64, attack_steps=2, out=str(run_dir), progress=False))
    evaluate_run(run_dir, attacks=["pgd", "autoattack"], n=16, attacks_to_run=["apgd-ce"], show_progress=False)
    table = summarize(tmp_path)
    # an APGD-CE-only run is named so, and poster numbers measured on CIFAR-10 stay out of a synthetic run's table
    assert "at             clean " in table and "; APGD-CE " in table and "on 16 images" in table
    assert "AutoAttack (1 seed)" not in table and "(poster" not in table and "poster's numbers are on cifar10" in table
    assert "robustness on synthetic-mnist:" in table and "(no published reference on synthetic-mnist)" in table
    assert "PGD-20 accuracy by ε on 16 images: 0 " in table


def test_the_cli_names_what_each_number_measured(run, capsys):
    assert main(["evaluate", str(run), "--attacks", "clean,autoattack", "--n", "16", "--autoattack-subset", "apgd-ce",
                 "--no-sweep"]) == 0
    out = capsys.readouterr().out
    assert "last: clean on 16 test images: " in out
    assert "last: APGD-CE at ε 8/255 on 16 test images: " in out and "AutoAttack" not in out
