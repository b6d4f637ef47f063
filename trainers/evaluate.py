"""Accuracy of a model on clean, PGD and AutoAttack inputs.

`robust_accuracy` is the entry point for any ``nn.Module`` that maps [0, 1] images to logits. The
loop's per-epoch `accuracy` and `pgd_accuracy` keep their counts on the device (one sync per set).
Everything here runs in float32 — model selection and final scores included; bf16 autocast is for
training steps only. AutoAttack is Croce & Hein's standard version from the ``pyautoattack`` package.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .attacks import pgd
from .errors import TrainersError
from .labels import STANDARD_AUTOATTACK
from .progress import forward_calls, progress, tracked
from .registry import Registry

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def accuracy(model: nn.Module, batches: Batches) -> float:
    """Top-1 accuracy in percent of ``model`` (put in eval mode) on clean batches, in float32."""
    model.eval()
    correct, seen = None, 0
    with torch.no_grad():
        for x, y in tracked(batches, "clean accuracy"):
            hits = (model(x).argmax(1) == y).sum()
            correct = hits if correct is None else correct + hits
            seen += len(y)
    return 100.0 * float(correct) / seen if correct is not None and seen else float("nan")


def pgd_accuracy(model: nn.Module, batches: Batches, *, eps: float = 8 / 255, step_size: float = 2 / 255,
                 steps: int = 10, seed: int = 0) -> float:
    """Top-1 accuracy in percent under an L∞ PGD attack (random start seeded by ``seed``), in float32."""
    model.eval()
    correct, seen, generator = None, 0, None
    for x, y in tracked(batches, f"PGD-{steps} at ε {eps * 255:.3g}/255"):
        if generator is None:
            generator = torch.Generator(device=x.device).manual_seed(seed)
        x_adv = pgd(model, x, y, eps, step_size, steps, random_start=True, generator=generator)
        with torch.no_grad():
            hits = (model(x_adv).argmax(1) == y).sum()
        correct = hits if correct is None else correct + hits
        seen += len(y)
    return 100.0 * float(correct) / seen if correct is not None and seen else float("nan")


def check_eps(eps: float) -> float:
    """ε must lie in (0, 1] for images in [0, 1]."""
    if not isinstance(eps, (int, float)) or not 0 < eps <= 1:
        raise TrainersError(f"eps must lie in (0, 1] (inputs are in [0, 1]; e.g. 8/255), got {eps!r}")
    return float(eps)


def parse_eps(text: str) -> float:
    """``"8/255"``, ``"0.031"`` -> a float in (0, 1]."""
    try:
        num, _, den = text.partition("/")
        value = float(num) / float(den) if den else float(num)
    except ValueError:
        raise TrainersError(f"cannot read eps {text!r}; write it as 8/255 or 0.0314") from None
    return check_eps(value)


def _batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device) -> Iterator[Any]:
    for start in range(0, len(y), batch_size):
        yield x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)


def _device_of(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def autoattack_breakdown(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float = 8 / 255, batch_size: int = 256,
    attacks_to_run: Sequence[str] = STANDARD_AUTOATTACK, seed: int = 0, state_path: Path | None = None,
    show_progress: bool = False, examples: torch.Tensor | None = None, seconds: dict[str, float] | None = None,
    state_key: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Robust accuracy (percent) after each attack of AutoAttack, applied in turn to the points still robust.

    Runs the standard L∞ configuration of ``pyautoattack`` one attack and one batch at a time, so that
    progress shows and ``state_path`` (a JSON file of robust flags and finished batches) lets an
    interrupted evaluation resume where it stopped. Returns ``{"clean": ..., "apgd-ce": ..., ...}``,
    each the accuracy after that attack (the last is AutoAttack's robust accuracy). When
    ``examples`` (shaped like ``x``) is given, the adversarial images that fooled the model are
    written into it; ``seconds`` (a dict) receives the time of the clean pass and of each attack,
    summed over every call that worked on this evaluation (kept in the resume state), so an
    interrupted and resumed evaluation reports what it cost in all, not only its last part.

    The resume state is used only if it was saved for the same images, attacks, ε, seed and batch
    size, the same weights (a sha256 of the model's state dict) and the same ``state_key`` (the
    checkpoint's provenance, `trainers.provenance`); anything else starts afresh, so a retrained
    model never inherits another model's robust flags.
    """
    from pyautoattack import AutoAttack

    check_eps(eps)
    unknown = [a for a in attacks_to_run if a not in STANDARD_AUTOATTACK]
    if unknown:
        raise TrainersError(f"unknown AutoAttack attacks {unknown}; expected some of: {', '.join(STANDARD_AUTOATTACK)}")
    device = _device_of(model)
    model = model.float().eval()
    attack = AutoAttack(model, eps=eps, norm="Linf", version="standard", seed=seed, device=device)
    attack.verbose = False
    settings = {"n": len(y), "attacks": list(attacks_to_run), "eps": eps, "seed": seed, "batch_size": batch_size,
                "weights_sha256": weights_sha256(model), "key": dict(state_key or {})}
    state = _AttackState.load(state_path, settings)
    if state.robust is None:
        started = time.perf_counter()
        with torch.no_grad():
            preds = torch.cat([model(xb).argmax(1).cpu() for xb, _ in _batches(x, y, batch_size, device)])
        state.robust = (preds == y.cpu()).tolist()
        state.accuracy["clean"] = 100.0 * sum(state.robust) / len(y)
        state.add_seconds("clean", started)
        state.save()
    total = len(attacks_to_run) * -(-sum(state.robust) // batch_size)  # an upper bound, for the bar
    with progress(total=total, desc="AutoAttack", unit="batch", enabled=show_progress) as bar:
        for name in attacks_to_run:
            if name in state.accuracy:
                continue
            attack.attacks_to_run = [name]
            if state.queue is None:  # the points this attack must try, fixed when it starts
                state.queue = [i for i, r in enumerate(state.robust) if r]
            for start in range(state.position, len(state.queue), batch_size):
                started = time.perf_counter()
                index = torch.tensor(state.queue[start:start + batch_size])
                xb, yb = x[index].to(device).float(), y[index].to(device)
                with forward_calls(model, f"{name} model calls"):
                    x_adv, _ = attack.run_standard_evaluation(xb, yb, batch_size=len(index))
                with torch.no_grad():
                    fooled = (model(x_adv).argmax(1) != yb).cpu()
                for i in index[fooled].tolist():
                    state.robust[i] = False
                if examples is not None:
                    examples[index[fooled]] = x_adv[fooled].to(examples.device, examples.dtype)
                state.position = start + batch_size
                state.add_seconds(name, started)
                state.save()
                bar.update()
                bar.set_postfix({name: f"{100.0 * sum(state.robust) / len(y):.2f}%"})
            state.accuracy[name] = 100.0 * sum(state.robust) / len(y)
            state.queue, state.position = None, 0
            state.save()
    if seconds is not None:
        seconds.update(state.seconds)
    return dict(state.accuracy)


class _AttackState:
    """Progress of one AutoAttack evaluation: robust flags, finished attacks, position in the current one."""

    def __init__(self, path: Path | None, settings: dict[str, Any]) -> None:
        self.path, self.settings = path, settings
        self.robust: list[bool] | None = None
        self.accuracy: dict[str, float] = {}
        self.queue: list[int] | None = None  # indices the current attack works through
        self.position = 0  # how far into the queue
        self.seconds: dict[str, float] = {}  # work time per stage, over every call that resumed this state

    @classmethod
    def load(cls, path: Path | None, settings: dict[str, Any]) -> _AttackState:
        """The state saved at ``path`` if it was saved with exactly ``settings``, else a fresh one."""
        state = cls(path, json.loads(json.dumps(settings)))  # JSON-normalised, to compare with what is read
        if path is not None and path.exists():
            try:
                saved = json.loads(path.read_text())
            except (OSError, ValueError):
                saved = None  # a torn or foreign file: start afresh, it is overwritten on the first save
            if isinstance(saved, dict) and saved.get("settings") == state.settings:
                state.robust, state.accuracy = saved["robust"], saved["accuracy"]
                state.queue, state.position = saved["queue"], saved["position"]
                state.seconds = dict(saved.get("seconds") or {})  # absent in states saved before it was kept
        return state

    def add_seconds(self, stage: str, started: float) -> None:
        """Add the time since ``started`` (a `time.perf_counter` reading) to ``stage``'s total."""
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started

    def save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"settings": self.settings, "robust": self.robust, "accuracy": self.accuracy,
                                   "queue": self.queue, "position": self.position, "seconds": self.seconds}))
        os.replace(tmp, self.path)


def weights_sha256(model: nn.Module) -> str:
    """Hex sha256 over the model's state dict (names, dtypes, shapes and bytes): which weights were attacked."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _clean(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, **options: Any) -> float:
    batches = _batches(x, y, options.get("batch_size", 256), _device_of(model))
    return accuracy(model, batches)


def _pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, **options: Any) -> float:
    check_eps(eps)
    steps = options.get("steps", 20)
    step_size = options.get("step_size") or eps / 4
    batches = _batches(x, y, options.get("batch_size", 256), _device_of(model))
    return pgd_accuracy(model.float(), batches, eps=eps, step_size=step_size, steps=steps, seed=options.get("seed", 0))


def _autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, **options: Any) -> float:
    breakdown = autoattack_breakdown(
        model, x, y, eps=eps, batch_size=options.get("batch_size", 256),
        attacks_to_run=options.get("attacks_to_run") or STANDARD_AUTOATTACK, seed=options.get("seed", 0),
        state_path=options.get("state_path"), show_progress=options.get("progress", False),
    )
    return breakdown[list(breakdown)[-1]]


AttackFn = Callable[..., float]
ATTACKS = Registry[AttackFn]("attack")
ATTACKS.add("clean", _clean)
ATTACKS.add("pgd", _pgd)
ATTACKS.add("autoattack", _autoattack)


def robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str = "clean",
                    eps: float = 8 / 255, **options: Any) -> float:
    """Accuracy in percent of ``model`` on ``x`` (images in [0, 1]) under ``attack``.

    Args:
        model: any module mapping [0, 1] images to logits; evaluated in eval mode and float32.
        x: images, any device (moved batch by batch to the model's device).
        y: labels.
        attack: ``clean``, ``pgd`` (L∞, random start) or ``autoattack`` (standard L∞ AutoAttack).
        eps: the L∞ radius in pixel units, in (0, 1]; ignored for ``clean``.
        **options: ``batch_size`` (256); ``steps`` (20) and ``step_size`` (ε/4) for PGD;
            ``attacks_to_run`` (a subset of apgd-ce, apgd-t, fab-t, square), ``state_path`` (resume
            file) and ``progress`` for AutoAttack; ``seed`` (0).
    """
    fn = ATTACKS.get(attack)
    if len(x) != len(y) or len(y) == 0:
        raise TrainersError(f"need as many labels as images, at least one: got {len(x)} images, {len(y)} labels")
    model.eval()
    return fn(model, x, y, eps, **options)
