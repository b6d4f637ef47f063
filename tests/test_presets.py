"""Loss presets against their formulas (hand computations on fixed logits) and the numbers in docs/trainers.md."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from trainers.config import TrainConfig
from trainers.errors import TrainersError
from trainers.loop import resolve, train
from trainers.losses import virtual_teacher_correct_prob
from trainers.methods import METHODS, Hyper, distillation_loss
from trainers.presets import PRESETS, config_loss_minimiser, loss_minimising_p_true


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(3)
    return torch.randn(6, 10, generator=g) * 2, torch.randn(6, 10, generator=g) * 2, torch.tensor([0, 1, 2, 3, 9, 5])


def hyper(method: str, preset: str, k: int = 10) -> Hyper:
    return Hyper(**METHODS.get(method).resolve_defaults(k, preset))


def elementwise_kl(log_p: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``nn.KLDivLoss()`` as the poster's notebook and Yuan et al.'s code call it: Σ t (log t - log p) / (B·K)."""
    return (target * (target.log() - log_p)).sum() / target.numel()


def manual_teacher(y: torch.Tensor, k: int, a: float) -> torch.Tensor:
    manual = torch.full((len(y), k), (1 - a) / (k - 1))
    manual[torch.arange(len(y)), y] = a
    return manual


def test_poster_preset_is_the_notebooks_kd_formula(logits):
    student, teacher, y = logits
    alpha, tau = 0.95, 6.0  # tfkd-self's α, τ; the notebook: (1-α) CE + α KLDivLoss()(log p_τ, p^t_τ)
    expected = (1 - alpha) * F.cross_entropy(student, y) + alpha * elementwise_kl(
        F.log_softmax(student / tau, 1), F.softmax(teacher / tau, 1))
    torch.testing.assert_close(distillation_loss("kd", student, y, hyper("tfkd-self", "poster"), teacher), expected)
    torch.testing.assert_close(distillation_loss("kd", student, y, hyper("at-tfkd-self", "poster"), teacher), expected)


def test_poster_preset_is_the_notebooks_virtual_teacher_formula(logits):
    student, _, y = logits
    alpha, tau, a = 0.1, 20.0, 0.99  # student also at τ, element-wise mean, no multiplier
    expected = (1 - alpha) * F.cross_entropy(student, y) + alpha * elementwise_kl(
        F.log_softmax(student / tau, 1), F.softmax(manual_teacher(y, 10, a) / tau, 1))
    torch.testing.assert_close(distillation_loss("virtual", student, y, hyper("tfkd-reg", "poster")), expected)


def test_yuan_literal_preset_is_yuans_code(logits):
    student, teacher, y = logits
    # loss_kd_self: (1-α) CE + α KLDivLoss()(log p_τ, p^t_τ) τ² · 50
    expected = 0.05 * F.cross_entropy(student, y) + 0.95 * elementwise_kl(
        F.log_softmax(student / 6, 1), F.softmax(teacher / 6, 1)) * 36 * 50
    torch.testing.assert_close(distillation_loss("kd", student, y, hyper("tfkd-self", "yuan-literal"), teacher),
                               expected)
    # loss_kd_regularization: (1-α) CE + α KLDivLoss()(log p, softmax(u/τ)) · 100, student at τ = 1
    expected = 0.9 * F.cross_entropy(student, y) + 0.1 * elementwise_kl(
        F.log_softmax(student, 1), F.softmax(manual_teacher(y, 10, 0.99) / 20, 1)) * 100
    torch.testing.assert_close(distillation_loss("virtual", student, y, hyper("tfkd-reg", "yuan-literal")), expected)
    # loss_kd (KD, Re-KD): (1-α) CE + α KLDivLoss()(log p_τ, p^t_τ) τ², α 0.6, τ 20
    expected = 0.4 * F.cross_entropy(student, y) + 0.6 * elementwise_kl(
        F.log_softmax(student / 20, 1), F.softmax(teacher / 20, 1)) * 400
    torch.testing.assert_close(distillation_loss("kd", student, y, hyper("rekd", "yuan-literal"), teacher), expected)


@pytest.mark.parametrize("k", [10, 100, 1000])
def test_yuan_strength_preset_is_yuans_code_as_run_on_cifar100(k):
    g = torch.Generator().manual_seed(k)
    student, teacher = torch.randn(4, k, generator=g), torch.randn(4, k, generator=g)
    y = torch.arange(4)
    # Yuan's element-wise KL at K = 100 is the batch-mean KL / 100, whatever K the data set has
    p_t = F.softmax(teacher / 6, 1)
    batch_kl = (p_t * (p_t.log() - F.log_softmax(student / 6, 1))).sum(1).mean()
    expected = 0.05 * F.cross_entropy(student, y) + 0.95 * batch_kl / 100 * 36 * 50
    torch.testing.assert_close(distillation_loss("kd", student, y, hyper("tfkd-self", "yuan-strength", k), teacher),
                               expected)


def total_kl_weight(h: Hyper) -> float:
    return h.alpha * h.multiplier * (h.temperature**2 if h.temperature_squared else 1.0)


def test_the_kl_weights_quoted_in_the_docs():
    assert total_kl_weight(hyper("tfkd-self", "yuan-literal", 10)) == pytest.approx(171.0)
    assert total_kl_weight(hyper("tfkd-self", "yuan-literal", 100)) == pytest.approx(17.1)
    assert total_kl_weight(hyper("tfkd-self", "yuan-strength", 10)) == pytest.approx(17.1)
    poster = total_kl_weight(hyper("at-tfkd-self", "poster", 10))
    assert poster == pytest.approx(0.095)
    assert total_kl_weight(hyper("at-tfkd-self", "yuan-literal", 10)) / poster == pytest.approx(1800.0)


def test_tfkd_reg_loss_minimiser_matches_the_issues_numbers():
    cifar10 = loss_minimising_p_true("tfkd-reg", hyper("tfkd-reg", "yuan-literal", 10), 10)
    assert cifar10 == pytest.approx(0.529, abs=1e-3)
    cifar100 = loss_minimising_p_true("tfkd-reg", hyper("tfkd-reg", "yuan-literal", 100), 100)
    assert cifar100 == pytest.approx(0.901, abs=1e-3)
    # the rule keeps the minimiser near CIFAR-100's (the virtual teacher's own p(true) moves with K)
    kept = loss_minimising_p_true("tfkd-reg", hyper("tfkd-reg", "yuan-strength", 10), 10)
    assert kept == pytest.approx(0.910, abs=1e-3) and abs(kept - cifar100) < 0.01


@pytest.mark.parametrize(("alpha", "m", "tau", "a", "k"), [(0.1, 10.0, 20.0, 0.99, 10), (0.5, 1.0, 4.0, 0.9, 100),
                                                           (0.3, 2.0, 1.0, 0.8, 3)])
def test_loss_minimiser_follows_the_closed_form_with_the_student_at_tau_1(alpha, m, tau, a, k):
    h = Hyper(alpha=alpha, multiplier=m, temperature=tau, a=a, student_temperature=1.0)
    t, w = virtual_teacher_correct_prob(k, a, tau), alpha * m
    closed = ((1 - alpha) + w * t) / ((1 - alpha) + w)
    assert loss_minimising_p_true("tfkd-reg", h, k) == pytest.approx(closed, abs=2e-3)


def test_loss_minimiser_of_kd_needs_the_teachers_p_true():
    h = Hyper(alpha=0.4, temperature=1.0, multiplier=1.0)
    assert loss_minimising_p_true("kd", h, 10) is None
    assert loss_minimising_p_true("kd", h, 10, teacher_p_true=0.7) == pytest.approx(0.6 + 0.4 * 0.7, abs=2e-3)
    assert loss_minimising_p_true("baseline", h, 10) is None
    assert loss_minimising_p_true("trades", h, 10) is None


def test_poster_tfkd_reg_barely_regularises():
    assert loss_minimising_p_true("tfkd-reg", hyper("tfkd-reg", "poster", 10), 10) > 0.999


def test_a_stored_config_gives_its_minimiser_and_old_configs_read_as_legacy():
    stored = {"method": "tfkd-reg", "num_classes": 10, "alpha": 0.1, "temperature": 20.0, "a": 0.99,
              "multiplier": 10.0, "student_temperature": 1.0}  # written before presets existed
    assert config_loss_minimiser(stored) == pytest.approx(0.529, abs=1e-3)
    assert config_loss_minimiser({"method": "tfkd-reg"}) is None
    old = TrainConfig(method="tfkd-reg", model="mlp-student", dataset="synthetic-mnist", out="x", num_classes=10,
                      multiplier=10.0)
    resolve(old)
    assert old.preset == "legacy" and old.multiplier == 10.0 and old.temperature_squared is False
    fresh = TrainConfig(method="tfkd-reg", model="mlp-student", dataset="synthetic-mnist", out="x")
    resolve(fresh)
    assert fresh.preset == "yuan-strength"


def test_unknown_preset_lists_the_presets():
    with pytest.raises(TrainersError, match="unknown preset 'nope'.*poster.*yuan-literal.*yuan-strength"):
        METHODS.get("tfkd-reg").resolve_defaults(10, "nope")
    assert {"poster", "yuan-literal", "yuan-strength"} <= set(PRESETS)


def test_a_run_stores_its_preset_and_the_values_it_resolved_to(tmp_path):
    config = TrainConfig(method="tfkd-reg", model="mlp-student", dataset="synthetic-mnist", out=str(tmp_path / "run"),
                         data_dir=str(tmp_path / "data"), epochs=1, train_subset=128, batch_size=64,
                         preset="poster", warmup_epochs=1, progress=False, record=False)
    train(config)
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["preset"] == "poster" and stored["multiplier"] == pytest.approx(0.1)
    assert stored["warmup_epochs"] == 1
    assert stored["student_temperature"] == 20.0 and stored["temperature_squared"] is False
    assert math.isfinite(config_loss_minimiser(stored))


ADDED_WITH_PRESETS = ("preset", "temperature_squared", "attack", "beta", "iad_begin", "warmup_epochs")


def test_a_recipe_still_recognises_a_baseline_run_made_before_presets(tmp_path):
    from trainers.recipes import _resolved, plan

    planned = {c.extras["run"]: c for c in plan("fig4", seeds=1, out=tmp_path, overrides={})}
    for run in ("baseline", "tfkd-reg"):
        now = _resolved(planned[run], 10)
        old = TrainConfig.from_json({k: v for k, v in now.to_json().items() if k not in ADDED_WITH_PRESETS})
        if run == "tfkd-reg":
            old.multiplier = 10.0  # what the code before presets resolved (Yuan's 100 / K)
        again = _resolved(old)
        if run == "baseline":
            assert again == now and again.preset is None
        else:
            assert again.preset == "legacy" and again.multiplier == 10.0 and again.temperature_squared is False


@pytest.mark.parametrize(("option", "message"), [({"preset": "nope"}, "unknown preset 'nope'"),
                                                  ({"attack": "nope"}, "unknown training attack 'nope'")])
def test_bad_preset_or_attack_names_fail_before_the_data_are_read(option, message):
    config = TrainConfig(method="tfkd-reg", model="mlp-student", dataset="synthetic-mnist", out="x", **option)
    with pytest.raises(TrainersError, match=message):
        resolve(config)
