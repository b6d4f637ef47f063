r"""Losses of the robust-training and adversarial-distillation literature, as pure functions of logits.

Each follows its paper's official code (facts checked there, code our own); where the code departs
from the paper's formula, the docstring says which we follow. Notation: x clean inputs, x' the
training attack's inputs (`trainers.attacks.TRAINING_ATTACKS`), q the one-hot label, p = softmax(z)
the student (or the model trained), p^t the teacher, p_τ = softmax(z/τ). KL terms are batch means of
the per-sample KL (``F.kl_div(..., "batchmean")``) unless a ``multiplier`` converts an element-wise
mean (÷K) as the original code takes it.

- TRADES (Zhang et al., ICML 2019):  H(q, p(x)) + β · KL(p(x) ‖ p(x'))
- MART (Wang et al., ICLR 2020):      BCE(p(x'), y) + β · mean_i[KL(p(x_i) ‖ p(x'_i)) · (1 - p_y(x_i))]
- ARD (Goldblum et al., AAAI 2020):   α τ² m · KL(p^t_τ(x) ‖ p_τ(x')) + (1-α) H(q, p(x))
- RSLAD (Zi et al., ICCV 2021):       m · [5/6 KL(p^t(x) ‖ p(x')) + 1/6 KL(p^t(x) ‖ p(x))]
- IAD-I (Zhu et al., ICLR 2022):      ARD + α · mean_i[(1 - w_i) KL(p(x_i) ‖ p(x'_i))], w_i = p^t_y(x'_i)^β
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .losses import kd_loss

MART_EPS = 1e-12  # MART's code: log(p + 1e-12), 1.0001 - p and 1.0000001 - p_y keep every log finite


def per_sample_kl(target_probs: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """KL(target ‖ softmax(z)) for each row, shape ``(B,)``, in float32.

    The target keeps its gradient: TRADES', MART's and IAD's code do not detach the clean prediction.
    """
    log_p = F.log_softmax(student_logits.float(), dim=1)
    target = target_probs.float()
    return (torch.xlogy(target, target) - target * log_p).sum(dim=1)


def trades_loss(clean_logits: torch.Tensor, adv_logits: torch.Tensor, labels: torch.Tensor,
                beta: float) -> torch.Tensor:
    r"""TRADES: H(q, p(x)) + β · KL(p(x) ‖ p(x')), the KL a batch mean (Zhang et al.'s ``/ batch_size``).

    β = 6 is their CIFAR-10 setting (1/λ in the paper); gradients flow through both p(x) and p(x').
    """
    robust = per_sample_kl(F.softmax(clean_logits.float(), dim=1), adv_logits).mean()
    return F.cross_entropy(clean_logits.float(), labels) + beta * robust


def mart_loss(clean_logits: torch.Tensor, adv_logits: torch.Tensor, labels: torch.Tensor,
              beta: float) -> torch.Tensor:
    r"""MART: BCE(p(x'), y) + β · mean_i[KL(p(x_i) ‖ p(x'_i)) · (1 - p_y(x_i))].

    BCE(p, y) = -log p_y - log(1 - max_{k≠y} p_k), the boosted cross-entropy that also pushes down
    the strongest wrong class; the KL is weighted towards misclassified clean inputs (small p_y).
    """
    adv_probs = F.softmax(adv_logits.float(), dim=1)
    top2 = adv_probs.topk(2, dim=1).indices
    runner_up = torch.where(top2[:, 0] == labels, top2[:, 1], top2[:, 0])
    boosted = F.cross_entropy(adv_logits.float(), labels) + F.nll_loss(
        torch.log(1.0001 - adv_probs + MART_EPS), runner_up)
    clean_probs = F.softmax(clean_logits.float(), dim=1)
    true_prob = clean_probs.gather(1, labels.view(-1, 1)).squeeze(1)
    kl = (clean_probs * (torch.log(clean_probs + MART_EPS) - torch.log(adv_probs + MART_EPS))).sum(dim=1)
    return boosted + beta * (kl * (1.0000001 - true_prob)).mean()


def ard_loss(clean_logits: torch.Tensor, adv_logits: torch.Tensor, teacher_clean_logits: torch.Tensor,
             labels: torch.Tensor, alpha: float, temperature: float, multiplier: float = 1.0) -> torch.Tensor:
    r"""ARD: α τ² m · KL(p^t_τ(x) ‖ p_τ(x')) + (1-α) H(q, p(x)).

    The KD loss with the soft term on the student's adversarial x' and the hard term on its clean x.
    Goldblum et al.'s code takes ``nn.KLDivLoss()``'s element-wise mean, so m = 1/K reproduces it.
    """
    soft = kd_loss(adv_logits, teacher_clean_logits, labels, 1.0, temperature, multiplier)
    hard = F.cross_entropy(clean_logits.float(), labels)
    return alpha * soft + (1.0 - alpha) * hard


def rslad_loss(clean_logits: torch.Tensor, adv_logits: torch.Tensor, teacher_clean_logits: torch.Tensor,
               multiplier: float = 1.0) -> torch.Tensor:
    r"""RSLAD: m · [5/6 KL(p^t(x) ‖ p(x')) + 1/6 KL(p^t(x) ‖ p(x))]: the teacher's clean soft labels replace q.

    Zi et al.'s code averages over classes too (÷10 on CIFAR-10, and multiplies by 10 on CIFAR-100 to
    match), so m = 0.1 reproduces it on both.
    """
    target = F.softmax(teacher_clean_logits.detach().float(), dim=1)
    adv = per_sample_kl(target, adv_logits).mean()
    clean = per_sample_kl(target, clean_logits).mean()
    return multiplier * (5.0 / 6.0 * adv + 1.0 / 6.0 * clean)


def iad_weights(teacher_adv_logits: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """IAD's per-sample trust in the teacher, w_i = p^t_y(x'_i)^β: its confidence in the truth on x'."""
    probs = F.softmax(teacher_adv_logits.detach().float(), dim=1)
    return probs.gather(1, labels.view(-1, 1)).squeeze(1).pow(beta)


def iad_loss(clean_logits: torch.Tensor, adv_logits: torch.Tensor, teacher_clean_logits: torch.Tensor,
             teacher_adv_logits: torch.Tensor, labels: torch.Tensor, alpha: float, temperature: float,
             beta: float, introspect: bool, multiplier: float = 1.0) -> torch.Tensor:
    r"""IAD-I: the ARD loss, plus α · mean_i[(1 - w_i) KL(p(x_i) ‖ p(x'_i))] once ``introspect`` is on.

    Where the teacher is unsure on x' (small w_i) the student is asked to agree with itself on x
    instead. Zhu et al.'s code (which we follow) weights only that introspection term, leaves the
    teacher term unweighted, and starts introspecting after a warm-up (epoch 60 of 200).
    """
    loss = ard_loss(clean_logits, adv_logits, teacher_clean_logits, labels, alpha, temperature, multiplier)
    if not introspect:
        return loss
    weights = 1.0 - iad_weights(teacher_adv_logits, labels, beta)
    own = per_sample_kl(F.softmax(clean_logits.float(), dim=1), adv_logits)
    return loss + alpha * (own * weights).mean()
