"""The training loop shared by every method: data on the device, one method call per batch.

The loop never branches on a method's name; it asks the method for a loss (`trainers.methods`).
Per epoch it writes a metrics line and the ``last`` checkpoint (and ``best`` when the selection
metric improves); gradients are recorded by gradscope at every optimizer step. All randomness is
derived from (seed, epoch), so a resumed run repeats an uninterrupted one exactly on CPU.
"""

from __future__ import annotations

import json
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import gradscope

from .checkpoint import load_checkpoint, save_checkpoint
from .config import SCHEDULES, TrainConfig, check_fields, fill, preset_for, validate
from .data import DataSplits, DeviceLoader, load_data
from .distributed import World, all_sum, init_world, leave_world
from .errors import TrainersError
from .evaluate import accuracy, pgd_accuracy
from .methods import METHODS, Hyper, Method, settle_loss_options, with_epoch
from .models import MODELS, build_model, count_parameters
from .presets import DEFAULT_PRESET
from .progress import progress
from .provenance import results_provenance
from .record_warmup import warm_after_training
from .run_folder import RunFolder
from .schedules import add_warmup, build_scheduler
from .teachers import load_teacher

RESUME_OVERRIDES = ("epochs", "device", "progress", "patience")
FINAL_PGD_STEPS = 20  # the final report's PGD-20


def final_pgd(config: TrainConfig) -> dict[str, float]:
    """The final report's PGD-20 at the run's own training ε (step ε/4, Madry et al.'s 2/255 for 8/255).

    A fixed 8/255 would measure an MNIST-scale run (ε 0.1 or 0.3) at a radius it was never trained for.
    """
    eps = config.eps or 8 / 255
    return {"eps": eps, "step_size": eps / 4, "steps": FINAL_PGD_STEPS}


def epoch_seed(seed: int, epoch: int) -> int:
    """The global RNG seed of one epoch (PGD random starts): resuming at any epoch repeats it."""
    return seed * 1_000_003 + epoch


def resolve(config: TrainConfig, data: DataSplits | None = None) -> Method:
    """Fill ``config``'s defaults from the schedule preset and the method; returns the method."""
    method = METHODS.get(config.method)
    MODELS.get(config.model)
    if config.schedule_preset is None:
        config.schedule_preset = preset_for(config.model, method.schedule)
    fill(config, SCHEDULES[config.schedule_preset])
    settle_loss_options(config, method)
    if data is not None:
        config.num_classes = data.info.num_classes
        config.in_shape = list(data.info.shape)
    if config.num_classes is not None:
        fill(config, method.resolve_defaults(config.num_classes, config.preset or DEFAULT_PRESET))
    if method.teacher and not config.teacher:
        raise TrainersError(f"method {method.name} needs a teacher checkpoint: pass --teacher PATH")
    if config.teacher and not method.teacher:
        raise TrainersError(f"method {method.name} takes no teacher; drop --teacher (methods with one: "
                            + ", ".join(n for n, m in METHODS.items() if m.teacher) + ")")
    validate(config)
    return method


def hyper_of(config: TrainConfig) -> Hyper:
    """The method hyperparameters of a resolved config."""
    return Hyper.from_config(config)


@dataclass
class _State:
    epoch: int = 0  # finished epochs
    step: int = 0  # optimizer steps taken
    best: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0


def train(
    config: TrainConfig, *, resume: bool = False, overwrite: bool = False, stop_after: int | None = None
) -> dict[str, Any]:
    """Run (or continue) one training run; returns its final results (also in ``results.json``).

    Args:
        config: what to train; ``None`` fields are resolved and the result written to the folder.
        resume: continue the run in ``config.out`` from its last checkpoint (its stored config wins,
            except for `RESUME_OVERRIDES`).
        overwrite: replace a run already in ``config.out``.
        stop_after: stop after this many epochs of this call, as an interruption would (for tests).
    """
    folder = RunFolder(Path(config.out))
    folder.check_claimable(resume=resume, overwrite=overwrite)
    if resume:
        stored = folder.read_train_config()
        for name in RESUME_OVERRIDES:
            given = getattr(config, name)
            if given is not None and given != getattr(TrainConfig, name, None):
                setattr(stored, name, given)
        config = stored
    check_fields(config)
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainersError(f"--device {config.device}: no CUDA device is available here; use --device cpu")
    world, device = init_world(config.device)
    finished = False
    try:
        results = _train(config, folder, world, device, resume, overwrite, stop_after)
        finished = True
        return results
    finally:
        leave_world(world, synchronize=finished)


def _train(
    config: TrainConfig, folder: RunFolder, world: World, device: torch.device, resume: bool, overwrite: bool,
    stop_after: int | None,
) -> dict[str, Any]:
    """Validate everything (names, ranges, data, model, teacher), then claim the folder and train.

    Nothing is created before the last check passed, so a refused run leaves no trace.
    """
    resolve(config)  # names and ranges before the data are read
    data = load_data(config.dataset, root=Path(config.data_dir), download=config.download,
                     val_size=config.val_size or 0, train_subset=config.train_subset, seed=config.seed)
    method = resolve(config, data)
    if config.test_subset is not None:
        data.test = data.test.subset(torch.arange(min(config.test_subset, len(data.test))))
    if config.batch_size % world.world_size:
        raise TrainersError(f"--batch-size {config.batch_size} does not split over {world.world_size} processes")
    torch.manual_seed(config.seed)
    info = data.info
    net = build_model(config.model, in_shape=info.shape, num_classes=info.num_classes, mean=info.mean,
                      std=info.std, width=config.width).to(device)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    net = net.to(memory_format=memory_format)
    teacher = load_teacher(config, method, net, info, device) if method.teacher else None
    lock = folder.claim(resume=resume, overwrite=overwrite) if world.is_main else None
    try:
        return _train_claimed(config, folder, world, device, resume, stop_after, data, method, net, teacher)
    finally:
        if lock is not None:
            lock.release()


def _train_claimed(config: TrainConfig, folder: RunFolder, world: World, device: torch.device, resume: bool,
                   stop_after: int | None, data: DataSplits, method: Method, net: nn.Module,
                   teacher: nn.Module | None) -> dict[str, Any]:
    info = data.info
    optimizer = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    scheduler = build_scheduler(optimizer, config)
    state = _State()
    if resume:
        saved = load_checkpoint(folder.last, map_location=device)
        net.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = _State(**saved["state"])
        if world.is_main:
            folder.truncate_metrics(state.epoch)
    elif world.is_main:
        config.save(folder.config)

    model: nn.Module = net
    if world.distributed:
        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        model = torch.compile(model)  # type: ignore[assignment]

    recorder = None
    if config.record:
        recorder = gradscope.record(
            model, folder.record, optimizer=optimizer, every=config.record_every,
            tags=_record_tags(config), append=resume and folder.has_record(),
            start_step=state.step,
        )
    per_rank = config.batch_size // world.world_size
    train_batches = DeviceLoader(data.train, info, per_rank, device=device, train=True, seed=config.seed,
                                 channels_last=config.channels_last, rank=world.rank,
                                 world_size=world.world_size)
    add_warmup(optimizer, scheduler, config.warmup_epochs, len(train_batches))
    evaluation = {
        name: DeviceLoader(split, info, config.eval_batch_size, device=device, train=False, seed=config.seed,
                           channels_last=config.channels_last)
        for name, split in (("val", data.val), ("test", data.test)) if split is not None and len(split.labels)
    }
    hyper = hyper_of(config)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if config.bf16 else nullcontext()
    epochs_run = 0
    try:
        with progress(total=config.epochs, initial=state.epoch, desc=f"{config.method} {config.model}",
                      unit="epoch", enabled=config.progress and world.is_main) as epoch_bar:
            while state.epoch < config.epochs:
                started = time.perf_counter()
                lr = optimizer.param_groups[0]["lr"]
                torch.manual_seed(epoch_seed(config.seed, state.epoch))
                train_batches.set_epoch(state.epoch)
                model.train()
                with progress(total=len(train_batches), desc=f"epoch {state.epoch + 1}", unit="batch",
                              leave=False, enabled=config.progress and world.is_main) as batch_bar:
                    totals = _run_epoch(model, method, teacher, train_batches, optimizer,
                                        with_epoch(hyper, state.epoch), autocast, batch_bar)
                state.step += len(train_batches)
                scheduler.step()
                state.epoch += 1
                loss_sum, correct, seen = all_sum(totals, world).tolist()
                row = {"epoch": state.epoch, "step": state.step, "lr": lr, "train_loss": loss_sum / seen,
                       "train_acc": 100.0 * correct / seen}
                row.update(_evaluate(net, evaluation, config, method))
                row["time_s"] = time.perf_counter() - started
                _select(state, row, config)
                if world.is_main:
                    # Record, metrics, then the checkpoint that commits the epoch: a crash anywhere
                    # resumes from the previous checkpoint and rewrites whatever came after it.
                    if recorder is not None:
                        recorder.flush()
                    folder.append_metrics(row)
                    checkpoint = _checkpoint(net, optimizer, scheduler, state, config)
                    if state.best_epoch == state.epoch and config.select_on != "last":
                        save_checkpoint(folder.best, checkpoint)
                    save_checkpoint(folder.last, checkpoint)
                epoch_bar.set_postfix({k: round(v, 3) for k, v in row.items() if k.endswith(("loss", "acc"))})
                epoch_bar.update()
                epochs_run += 1
                if config.patience is not None and state.bad_epochs >= config.patience:
                    break
                if stop_after is not None and epochs_run >= stop_after:
                    return {"interrupted_at_epoch": state.epoch}
    finally:
        if recorder is not None:
            recorder.close()
    results = _final_results(net, evaluation, config, method, folder, state)
    if world.is_main:
        folder.results.write_text(json.dumps(results, indent=2) + "\n")
        if config.record and config.progress:  # seconds for a long record: say so rather than go quiet
            print(f"{folder.root}: caching the gradient record's views for the dashboard ...", file=sys.stderr)
        warm_after_training(folder)
    return results


def _run_epoch(model: nn.Module, method: Method, teacher: nn.Module | None, batches: DeviceLoader,
               optimizer: torch.optim.Optimizer, hyper: Hyper, autocast: Any, bar: Any) -> torch.Tensor:
    """One pass over ``batches``; returns (loss sum, correct, seen) as a float64 tensor on the device.

    The sums stay on the device, so the step never waits for it; they are read once per epoch.
    """
    totals = torch.zeros(3, dtype=torch.float64, device=batches.device)
    for x, y in batches:
        with autocast:
            out = method.loss(model, teacher, x, y, hyper)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        with torch.no_grad():
            totals[0] += out.loss.detach().double() * len(y)
            totals[1] += (out.logits.argmax(1) == y).sum()
        totals[2] += len(y)
        bar.update()
    return totals


def _record_tags(config: TrainConfig) -> dict[str, Any]:
    return {"method": config.method, "model": config.model, "dataset": config.dataset, "seed": config.seed,
            "title": f"{config.method} (seed {config.seed})"}


def _evaluate(net: nn.Module, loaders: dict[str, DeviceLoader], config: TrainConfig,
              method: Method) -> dict[str, float]:
    """Clean accuracy of every split, and PGD accuracy on validation for adversarial methods.

    The validation attack's random start is the same every epoch, so epochs compare fairly. Always in
    float32: ``--bf16`` is for training steps only, so model selection is never made in bf16.
    """
    row = {f"{name}_acc": accuracy(net, loader) for name, loader in loaders.items()}
    if method.adversarial and "val" in loaders:
        row["val_pgd_acc"] = pgd_accuracy(net, loaders["val"], eps=config.eps or 0.0, step_size=config.step_size or 0.0,
                                          steps=config.eval_pgd_steps, seed=config.seed)
    return row


def _select(state: _State, row: dict[str, float], config: TrainConfig) -> None:
    """Track the best epoch by ``select_on`` and the epochs since it improved (early stopping)."""
    value = row["epoch"] if config.select_on == "last" else row.get(config.select_on or "", -math.inf)
    if value > state.best:
        state.best, state.best_epoch, state.bad_epochs = float(value), state.epoch, 0
    else:
        state.bad_epochs += 1


def _checkpoint(net: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, state: _State,
                config: TrainConfig) -> dict[str, Any]:
    return {"config": config.to_json(), "model": net.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "state": vars(state).copy()}


def _final_results(net: nn.Module, loaders: dict[str, DeviceLoader], config: TrainConfig, method: Method,
                   folder: RunFolder, state: _State) -> dict[str, Any]:
    """Test accuracy (and PGD-20 accuracy for adversarial methods) of the last and the best model."""
    evaluated: dict[str, Any] = {}
    test = loaders.get("test")
    candidates = {"last": net.state_dict()}
    if config.select_on != "last" and folder.best.exists():
        candidates["best"] = load_checkpoint(folder.best, map_location=next(net.parameters()).device)["model"]
    last_state = {k: v.clone() for k, v in net.state_dict().items()}
    attack = final_pgd(config)
    for name, weights in candidates.items():
        net.load_state_dict(weights)
        scores: dict[str, Any] = {"test_acc": accuracy(net, test) if test else None}
        if method.adversarial and test is not None:
            scores["test_pgd20_acc"] = pgd_accuracy(net, test, seed=config.seed, **attack)
        evaluated[name] = scores
    net.load_state_dict(last_state)
    files = {"last": folder.last, "best": folder.best if "best" in candidates else folder.last}
    provenance = results_provenance(folder.root, files, dataset=config.dataset, n=test.num_images if test else 0,
                                    attacks=["clean", "pgd-20"] if method.adversarial else ["clean"],
                                    eps=attack["eps"] if method.adversarial else 0.0, seed=config.seed,
                                    batch_size=config.eval_batch_size)
    return {
        "method": config.method, "model": config.model, "dataset": config.dataset, "seed": config.seed,
        "epochs": state.epoch, "steps": state.step, "best_epoch": state.best_epoch if config.select_on != "last"
        else state.epoch, "select_on": config.select_on,
        "parameters": count_parameters(net), "parameters_without_biases": count_parameters(net, biases=False),
        "last": evaluated["last"], "best": evaluated.get("best", evaluated["last"]), "provenance": provenance,
    }
