"""Lightning and Hugging Face integrations: a real 20-step CPU training each, against the plain loop.

The same seeded tiny model, the same full batch every step, SGD, gradients clipped to norm 0.05
(which binds): the record each callback writes must equal `gradscope.record` in a plain loop, after
clipping by default and before it with ``when="pre_clip"``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import gradscope
from gradscope import GradscopeError

STEPS, BATCH, CLIP, LR = 20, 8, 0.05, 0.1


class Tiny(nn.Module):
    """6 -> 16 -> 3 classifier; returns the loss as the Hugging Face Trainer expects."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 16), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = self.fc2(torch.tanh(self.fc1(x)))
        return {"logits": logits, "loss": F.cross_entropy(logits, labels)}


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    return torch.randn(BATCH, 6, generator=gen), torch.randint(0, 3, (BATCH,), generator=gen)


def _tiny() -> Tiny:
    torch.manual_seed(0)
    return Tiny()


def _plain_loop(when: str) -> gradscope.Record:
    model, (x, y) = _tiny(), _data()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    recorder = gradscope.record(model, optimizer=opt if when == "post_clip" else None)
    for _ in range(STEPS):
        opt.zero_grad()
        model(x, y)["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
    recorder.close()
    return recorder.load()


def _assert_same(record: gradscope.Record, reference: gradscope.Record) -> None:
    assert record.steps.tolist() == list(range(STEPS))
    assert record.param_names == reference.param_names == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    for stat in gradscope.STATS:
        np.testing.assert_allclose(record.matrix("param", stat).values, reference.matrix("param", stat).values,
                                   rtol=1e-5, atol=1e-8, err_msg=stat)


def test_clipping_binds_so_the_two_moments_differ():
    post, pre = _plain_loop("post_clip"), _plain_loop("pre_clip")
    total = np.sqrt((post.matrix("param", "l2").values ** 2).sum(1))
    np.testing.assert_allclose(total, CLIP, rtol=1e-4)
    assert (np.sqrt((pre.matrix("param", "l2").values ** 2).sum(1)) > CLIP * 1.5).all()


# -- Lightning ---------------------------------------------------------------------------------------
def _lightning_fit(callback, tmp_path) -> None:
    lightning = pytest.importorskip("lightning.pytorch")

    class Module(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = _tiny()

        def training_step(self, batch, batch_idx):
            return self.net(*batch)["loss"]

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=LR)

    module = Module()
    x, y = _data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH)
    trainer = lightning.Trainer(
        accelerator="cpu", devices=1, max_steps=STEPS, gradient_clip_val=CLIP, callbacks=[callback],
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, loader)


@pytest.mark.slow
@pytest.mark.parametrize("when", ["post_clip", "pre_clip"])
def test_lightning_callback_equals_the_plain_loop(tmp_path, when):
    pytest.importorskip("lightning.pytorch")
    from gradscope.integrations.lightning import GradscopeCallback

    callback = GradscopeCallback(tmp_path / "record", when=when)
    _lightning_fit(callback, tmp_path)
    assert callback.recorder is not None and callback.recorder.closed
    record = gradscope.load(tmp_path / "record")
    _assert_same(_renamed(record), _plain_loop(when))


def _renamed(record: gradscope.Record) -> gradscope.Record:
    """The Lightning module holds the model as ``net``: compare under the plain model's names."""
    meta = {**record.meta, "params": [{**p, "name": p["name"].removeprefix("net.")} for p in record.meta["params"]]}
    return gradscope.Record(meta, folder=record.folder)


# -- Hugging Face ------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("when", ["post_clip", "pre_clip"])
def test_huggingface_callback_equals_the_plain_loop(tmp_path, when):
    transformers = pytest.importorskip("transformers")
    from gradscope.integrations.huggingface import RECORD_FOLDER, GradscopeCallback

    x, y = _data()
    rows = [{"x": x[i], "labels": y[i]} for i in range(BATCH)]  # one batch: the order cannot matter
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=STEPS, per_device_train_batch_size=BATCH, learning_rate=LR,
        optim="sgd", lr_scheduler_type="constant", max_grad_norm=CLIP, weight_decay=0.0, report_to=[],
        save_strategy="no", logging_strategy="no", use_cpu=True, dataloader_num_workers=0, seed=0,
    )
    callback = GradscopeCallback(when=when)
    transformers.Trainer(model=_tiny(), args=args, train_dataset=rows, callbacks=[callback]).train()
    assert callback.recorder is not None and callback.recorder.closed
    _assert_same(gradscope.load(tmp_path / RECORD_FOLDER), _plain_loop(when))


def test_bad_when_lists_the_accepted_ones():
    from gradscope.integrations import check_when

    with pytest.raises(GradscopeError, match="'after' is not one of 'post_clip', 'pre_clip'"):
        check_when("after")


def test_closure_step_records_after_the_closure():
    """optimizer.step(closure) runs backward inside the closure: the record must see those gradients."""
    model, (x, y) = _tiny(), _data()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    recorder = gradscope.record(model, optimizer=opt)
    seen = []

    def closure():
        opt.zero_grad()
        loss = model(x, y)["loss"]
        loss.backward()
        seen.append(float(model.fc1.weight.grad.norm()))
        return loss

    for _ in range(3):
        opt.step(closure)
    record = recorder.load()
    np.testing.assert_allclose(record.matrix("param", "l2").values[:, 0], seen, rtol=1e-6)
