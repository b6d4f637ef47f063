"""Automatic grouping on the architectures researchers train: one block per repeated layer, sub-layers as rows.

Tiny models with random weights (nothing is downloaded); each must give the expected block list.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradscope
from gradscope.figures import heatmap_grid
from gradscope.grouping import auto_groups, relative_name


def _groups(model: nn.Module) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """Blocks and stages in model order, and each block's layers as seen from inside it (the rows)."""
    names = [n for n, _ in model.named_parameters()]
    groups = auto_groups(model, names)
    rows: dict[str, list[str]] = {}
    for g in groups:
        rows.setdefault(g.block, [])
        if relative_name(g.layer, g.block) not in rows[g.block]:
            rows[g.block].append(relative_name(g.layer, g.block))
    return list(rows), list(dict.fromkeys(g.stage for g in groups)), rows


class Encoder(nn.Module):
    """Embedding, a 3-layer nn.TransformerEncoder, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 8)
        layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, 3, enable_nested_tensor=False)
        self.head = nn.Linear(8, 11)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)))


def test_transformer_encoder_has_three_blocks_not_eight():
    blocks, stages, rows = _groups(Encoder())
    assert blocks == ["stem", "encoder.layers.0", "encoder.layers.1", "encoder.layers.2", "head"]
    assert stages == ["stem", "encoder.layers", "head"]
    assert rows["encoder.layers.1"] == ["self_attn", "self_attn.out_proj", "linear1", "linear2", "norm1", "norm2"]
    assert rows["stem"] == ["embed"] and rows["head"] == ["head"]


def test_transformer_heatmap_reads_like_the_resnet_one():
    """Figure 6 of a transformer: blocks as columns, the sub-layers of a block as rows."""
    model = Encoder()
    tokens = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(0))
    with gradscope.record(model) as recorder:
        model(tokens).sum().backward()
    grid = heatmap_grid(recorder.load(), "mean_abs", columns="block")
    assert grid.columns == ["stem", "encoder.layers.0", "encoder.layers.1", "encoder.layers.2", "head"]
    assert grid.rows == ["embed", "self_attn", "self_attn.out_proj", "linear1", "linear2", "norm1", "norm2", "head"]
    assert (grid.values[1:7, 1:4] > 0).all()  # every sub-layer of every block has a gradient


def test_tiny_gpt2():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=3, n_embd=16, n_head=2, vocab_size=64, n_positions=16,
                                     bos_token_id=0, eos_token_id=0)
    blocks, stages, rows = _groups(transformers.GPT2LMHeadModel(config))
    assert blocks == ["stem", "transformer.h.0", "transformer.h.1", "transformer.h.2", "head"]
    assert stages == ["stem", "transformer.h", "head"]
    assert rows["transformer.h.0"] == ["ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"]
    assert rows["stem"] == ["transformer.wte", "transformer.wpe"] and rows["head"] == ["transformer.ln_f"]


def test_tiny_llama():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                                      num_key_value_heads=1, vocab_size=64, tie_word_embeddings=False)
    blocks, stages, rows = _groups(transformers.LlamaForCausalLM(config))
    assert blocks == ["stem", "model.layers.0", "model.layers.1", "head"]
    assert stages == ["stem", "model.layers", "head"]
    assert rows["model.layers.1"] == [
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm",
    ]
    assert rows["stem"] == ["model.embed_tokens"] and rows["head"] == ["model.norm", "lm_head"]


def test_tiny_bert():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(num_hidden_layers=2, hidden_size=16, intermediate_size=32,
                                     num_attention_heads=2, vocab_size=64)
    blocks, _, rows = _groups(transformers.BertModel(config))
    assert blocks == ["stem", "encoder.layer.0", "encoder.layer.1", "head"]
    assert rows["encoder.layer.0"][:3] == ["attention.self.query", "attention.self.key", "attention.self.value"]


def test_timm_vit():
    timm = pytest.importorskip("timm")
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=3, img_size=32, patch_size=8,
                              num_classes=10)
    blocks, stages, rows = _groups(model)
    assert blocks == ["stem", "blocks.0", "blocks.1", "blocks.2", "head"]
    assert stages == ["stem", "blocks", "head"]
    assert rows["blocks.0"] == ["norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"]
    assert rows["stem"] == ["(root)", "patch_embed.proj"]  # cls_token and pos_embed belong to the model
    assert rows["head"] == ["norm", "head"]


def test_timm_convnext_stages_hold_blocks():
    timm = pytest.importorskip("timm")
    blocks, stages, rows = _groups(timm.create_model("convnext_atto", pretrained=False, num_classes=10))
    depths = (2, 2, 6, 2)
    expected = ["stem"]
    for s, depth in enumerate(depths):
        expected += [f"stages.{s}.downsample"] if s else []
        expected += [f"stages.{s}.blocks.{b}" for b in range(depth)]
    assert blocks == [*expected, "head"]
    assert stages == ["stem", "stages.0", "stages.1", "stages.2", "stages.3", "head"]
    assert rows["stages.2.blocks.3"] == ["·", "conv_dw", "norm", "mlp.fc1", "mlp.fc2"]  # "·": the block's gamma


def test_torchvision_resnet50_and_efficientnet():
    torchvision = pytest.importorskip("torchvision")
    blocks, stages, _ = _groups(torchvision.models.resnet50())
    assert blocks == ["stem", *(f"layer{s}.{b}" for s, n in zip(range(1, 5), (3, 4, 6, 3)) for b in range(n)), "head"]
    assert stages == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    blocks, stages, _ = _groups(torchvision.models.efficientnet_b0())
    assert blocks[:4] == ["stem", "features.1.0", "features.2.0", "features.2.1"]  # a one-block stage too
    assert stages == ["stem", *(f"features.{k}" for k in range(1, 8)), "head"]


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_project_resnets(name):
    from trainers.models import build_model

    model = build_model(name, in_shape=(3, 32, 32), num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3, width=8)
    blocks, stages, _ = _groups(model)
    per_stage = (2, 2, 2, 2) if name == "resnet18" else (3, 4, 6, 3)
    assert blocks == ["stem", *(f"layer{s}.{b}" for s, n in zip(range(1, 5), per_stage) for b in range(n)), "head"]
    assert stages == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]


class MixtureBlock(nn.Module):
    """A block whose feed-forward part is a list of experts: the experts are rows, not blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.Linear(4, 4)
        self.moe = nn.Module()
        self.moe.experts = nn.ModuleList(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 4)) for _ in range(3))


def test_containers_inside_blocks_are_rows():
    model = nn.Module()
    model.embed = nn.Linear(2, 4)
    model.layers = nn.ModuleList(MixtureBlock() for _ in range(2))
    blocks, stages, rows = _groups(model)
    assert blocks == ["stem", "layers.0", "layers.1"]
    assert rows["layers.1"] == ["attn", "moe.experts.0.0", "moe.experts.0.1", "moe.experts.1.0", "moe.experts.1.1",
                                "moe.experts.2.0", "moe.experts.2.1"]


def test_groups_argument_still_overrides():
    model = Encoder()
    names = [n for n, _ in model.named_parameters()]
    record = gradscope.record(model, groups={r"^encoder\.layers\.\d+\.": "trunk"}).load()
    assert record.names("block") == ["stem", "trunk", "head"]
    assert len(names) == len(record.param_names)
