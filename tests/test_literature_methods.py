"""TRADES, MART, ARD, RSLAD and IAD: losses and attack objectives against hand computations on fixed logits."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainers.adversarial_losses import ard_loss, iad_loss, iad_weights, mart_loss, rslad_loss, trades_loss
from trainers.attacks import TRAINING_ATTACKS, kl_to_target_sum, pgd, training_attack
from trainers.errors import TrainersError
from trainers.methods import METHODS, Hyper, adversarial_inputs, with_epoch


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(11)
    clean, adv, teacher, teacher_adv = (torch.randn(5, 4, generator=g) * 2 for _ in range(4))
    return clean, adv, teacher, teacher_adv, torch.tensor([0, 1, 2, 3, 1])


def softmax_rows(z: torch.Tensor) -> list[list[float]]:
    """Softmax written out per row, independent of torch.softmax."""
    rows = []
    for row in z.tolist():
        exps = [pow(2.718281828459045, v - max(row)) for v in row]
        rows.append([e / sum(exps) for e in exps])
    return rows


def kl(p: list[float], q: list[float]) -> float:
    import math

    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))


def ce(z: torch.Tensor, y: torch.Tensor) -> float:
    import math

    return sum(-math.log(row[label]) for row, label in zip(softmax_rows(z), y.tolist())) / len(y)


def test_trades_loss_by_hand(logits):
    clean, adv, _, _, y = logits
    p, q = softmax_rows(clean), softmax_rows(adv)
    expected = ce(clean, y) + 6.0 * sum(kl(a, b) for a, b in zip(p, q)) / len(y)
    assert trades_loss(clean, adv, y, beta=6.0).item() == pytest.approx(expected, rel=1e-5)


def test_mart_loss_by_hand(logits):
    import math

    clean, adv, _, _, y = logits
    p, q = softmax_rows(clean), softmax_rows(adv)
    boosted = 0.0
    robust = 0.0
    for pi, qi, label in zip(p, q, y.tolist()):
        wrong = max((v, k) for k, v in enumerate(qi) if k != label)[1]  # strongest wrong class on x'
        boosted += -math.log(qi[label]) - math.log(1.0001 - qi[wrong] + 1e-12)
        robust += sum(a * (math.log(a + 1e-12) - math.log(b + 1e-12)) for a, b in zip(pi, qi)) * (1.0000001 - pi[label])
    expected = boosted / len(y) + 6.0 * robust / len(y)
    assert mart_loss(clean, adv, y, beta=6.0).item() == pytest.approx(expected, rel=1e-5)


def test_ard_loss_by_hand(logits):
    clean, adv, teacher, _, y = logits
    alpha, tau, m = 0.7, 3.0, 0.25
    soft = sum(kl(a, b) for a, b in zip(softmax_rows(teacher / tau), softmax_rows(adv / tau))) / len(y)
    expected = alpha * tau**2 * m * soft + (1 - alpha) * ce(clean, y)
    assert ard_loss(clean, adv, teacher, y, alpha, tau, m).item() == pytest.approx(expected, rel=1e-5)


def test_rslad_loss_by_hand(logits):
    clean, adv, teacher, _, y = logits
    t = softmax_rows(teacher)
    adv_kl = sum(kl(a, b) for a, b in zip(t, softmax_rows(adv))) / len(y)
    clean_kl = sum(kl(a, b) for a, b in zip(t, softmax_rows(clean))) / len(y)
    expected = 0.1 * (5 / 6 * adv_kl + 1 / 6 * clean_kl)
    assert rslad_loss(clean, adv, teacher, multiplier=0.1).item() == pytest.approx(expected, rel=1e-5)


def test_iad_loss_by_hand_before_and_after_its_warm_up(logits):
    clean, adv, teacher, teacher_adv, y = logits
    alpha, tau, beta = 0.8, 2.0, 0.1
    ard = ard_loss(clean, adv, teacher, y, alpha, tau)
    assert iad_loss(clean, adv, teacher, teacher_adv, y, alpha, tau, beta, introspect=False).item() == pytest.approx(
        ard.item())
    trust = [row[label] ** beta for row, label in zip(softmax_rows(teacher_adv), y.tolist())]
    own = [kl(a, b) for a, b in zip(softmax_rows(clean), softmax_rows(adv))]
    expected = ard.item() + alpha * sum((1 - w) * d for w, d in zip(trust, own)) / len(y)
    assert iad_loss(clean, adv, teacher, teacher_adv, y, alpha, tau, beta, introspect=True).item() == pytest.approx(
        expected, rel=1e-5)
    torch.testing.assert_close(iad_weights(teacher_adv, y, beta), torch.tensor(trust))


def test_attack_objectives_by_hand(logits):
    clean, adv, teacher, _, y = logits
    target = F.softmax(teacher, 1)
    expected = sum(kl(a, b) for a, b in zip(softmax_rows(teacher), softmax_rows(adv)))
    assert kl_to_target_sum(adv, target).item() == pytest.approx(expected, rel=1e-5)
    ce_sum = TRAINING_ATTACKS.get("ce").loss(adv, y)
    assert ce_sum.item() == pytest.approx(ce(adv, y) * len(y), rel=1e-5)


def tiny(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 4)).eval()


def test_attack_targets_are_labels_own_clean_or_teachers_clean_prediction():
    model, teacher = tiny(0), tiny(1)
    x, y = torch.rand(6, 3, 4, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    assert TRAINING_ATTACKS.get("ce").target(model, teacher, x, y) is y
    torch.testing.assert_close(TRAINING_ATTACKS.get("trades-kl").target(model, teacher, x, y), F.softmax(model(x), 1))
    torch.testing.assert_close(TRAINING_ATTACKS.get("teacher-kl").target(model, teacher, x, y),
                               F.softmax(teacher(x), 1))
    with pytest.raises(TrainersError, match="teacher"):
        TRAINING_ATTACKS.get("teacher-kl").target(model, None, x, y)


@pytest.mark.parametrize("name", ["trades-kl", "teacher-kl", "ce-gaussian"])
def test_each_training_attack_raises_its_objective_within_the_ball(name):
    model, teacher = tiny(0), tiny(1)
    g = torch.Generator().manual_seed(4)
    x, y = torch.rand(16, 3, 4, 4, generator=g), torch.randint(0, 4, (16,), generator=g)
    objective = TRAINING_ATTACKS.get(name)
    target = objective.target(model, teacher, x, y)
    x_adv = training_attack(model, teacher, x, y, name, 0.1, 0.02, 10)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        assert objective.loss(model(x_adv), target) > objective.loss(model(x), target)
    assert all(p.grad is None for p in model.parameters())


def test_gaussian_start_is_tiny_noise_in_the_box():
    x = torch.rand(8, 3, 4, 4)
    start = pgd(tiny(0), x, torch.zeros(8, dtype=torch.long), 0.1, 0.0, 0, start="gaussian",
                generator=torch.Generator().manual_seed(0))
    assert 0 < (start - x).abs().max() < 0.01 and start.min() >= 0 and start.max() <= 1
    with pytest.raises(TrainersError, match="unknown PGD start"):
        pgd(tiny(0), x, torch.zeros(8, dtype=torch.long), 0.1, 0.0, 0, start="nope")


def test_a_methods_attack_is_its_configs_attack():
    model, teacher = tiny(0), tiny(1)
    x, y = torch.rand(8, 3, 4, 4), torch.randint(0, 4, (8,))
    trades = Hyper(**METHODS.get("trades").resolve_defaults(4))
    assert trades.attack == "trades-kl" and trades.beta == 6.0
    torch.manual_seed(0)
    kl_inputs = adversarial_inputs(model, teacher, x, y, trades)
    torch.manual_seed(0)
    ce_inputs = adversarial_inputs(model, teacher, x, y, Hyper(**{**vars(trades), "attack": "ce"}))
    assert not torch.equal(kl_inputs, ce_inputs)
    assert METHODS.get("rslad").resolve_defaults(4)["attack"] == "teacher-kl"
    assert METHODS.get("ard").resolve_defaults(10)["multiplier"] == pytest.approx(0.1)  # element-wise KL: 1/K


def test_iad_is_ard_during_its_warm_up_and_differs_after():
    model, teacher = tiny(0), tiny(1)
    x, y = torch.rand(8, 3, 4, 4), torch.randint(0, 4, (8,))
    iad = Hyper(**{**METHODS.get("iad").resolve_defaults(4), "epochs": 10, "alpha": 0.9})
    ard = Hyper(**{**vars(iad), "attack": "ce"})

    def loss(name: str, h: Hyper) -> float:
        torch.manual_seed(0)
        return METHODS.get(name).loss(model.train(), teacher, x, y, h).loss.item()

    assert loss("iad", with_epoch(iad, 2)) == pytest.approx(loss("ard", ard))
    assert loss("iad", with_epoch(iad, 3)) > loss("ard", ard)


def test_fig7_plans_the_literature_with_each_methods_schedule(tmp_path):
    from trainers.loop import resolve
    from trainers.recipes import plan

    configs = {c.extras["run"]: c for c in plan("fig7", seeds=1, out=tmp_path, overrides={})}
    assert {"at", "trades", "mart", "ard", "rslad", "iad", "at-tfkd-self"} <= set(configs)
    expected = {"at": "adversarial-exp", "trades": "trades-step", "mart": "trades-step", "ard": "ard-step",
                "iad": "ard-step", "rslad": "rslad-step"}
    for run, preset in expected.items():
        config = configs[run]
        config.num_classes = 10
        resolve(config)
        assert config.schedule_preset == preset, run
    assert configs["rslad"].epochs == 300 and configs["trades"].milestones == [74, 89, 99]


def test_trades_trains_a_teacher_that_ard_distils(tmp_path):
    from trainers.config import TrainConfig
    from trainers.loop import train

    common = {"model": "mlp-student", "dataset": "synthetic-mnist", "data_dir": str(tmp_path / "data"),
              "epochs": 1, "train_subset": 128, "batch_size": 64, "val_size": 64, "attack_steps": 1,
              "progress": False, "record": False}
    teacher = train(TrainConfig(method="trades", out=str(tmp_path / "trades"), **common))
    assert set(teacher["best"]) >= {"test_acc"}
    student = train(TrainConfig(method="ard", out=str(tmp_path / "ard"), teacher=str(tmp_path / "trades"), **common))
    assert student["epochs"] == 1
