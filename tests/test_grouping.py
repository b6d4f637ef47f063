"""`gradscope.grouping`: automatic layer/block/stage groups and user mappings."""

from __future__ import annotations

import pytest
import torch
from conftest import TinyMLP, TinyResNet, resnet_group
from torch import nn

import gradscope
from gradscope import GradscopeError, Groups
from gradscope.grouping import BlockContainer, auto_groups, block_containers, owner_of, relative_name, resolve


def _resolve(model, spec=None):
    names = [n for n, _ in model.named_parameters()]
    return names, resolve(model, names, spec)


def test_torchvision_resnet18():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(weights=None)
    names, groups = _resolve(model)
    assert len(names) == 62
    assert block_containers(model) == [BlockContainer(f"layer{k}", f"layer{k}") for k in range(1, 5)]
    blocks = list(dict.fromkeys(g.block for g in groups))
    assert blocks == ["stem", *(f"layer{s}.{b}" for s in range(1, 5) for b in range(2)), "head"]
    stages = list(dict.fromkeys(g.stage for g in groups))
    assert stages == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    by_name = dict(zip(names, groups))
    assert by_name["conv1.weight"] == Groups("conv1", "stem", "stem")
    assert by_name["bn1.bias"] == Groups("bn1", "stem", "stem")
    assert by_name["layer2.0.downsample.0.weight"] == Groups("layer2.0.downsample.0", "layer2.0", "layer2")
    assert by_name["layer4.1.bn2.weight"] == Groups("layer4.1.bn2", "layer4.1", "layer4")
    assert by_name["fc.weight"] == Groups("fc", "head", "head")
    # the same through a recorder: what meta.json stores
    record = gradscope.record(model).load()
    assert record.names("block") == blocks
    # conv1 bn1 | 8 blocks x (conv1 bn1 conv2 bn2) | 3 downsamples x (conv bn) | fc
    assert len(record.names("layer")) == 2 + 8 * 4 + 3 * 2 + 1
    assert record.members("block")["layer3.0"] == [
        n for n in names if n.startswith("layer3.0.")
    ]


def test_tiny_resnet_grouping_matches_the_hand_written_one():
    model = TinyResNet()
    names, groups = _resolve(model)
    for name, group in zip(names, groups):
        assert (group.layer, group.block, group.stage) == tuple(resnet_group(name, lv) for lv in
                                                                ("layer", "block", "stage"))


def test_mlp_falls_back_to_the_module_tree():
    names, groups = _resolve(TinyMLP())
    assert block_containers(TinyMLP()) == []
    assert [(g.layer, g.block, g.stage) for g in groups] == [
        (layer, layer, layer) for layer in ("fc1", "fc1", "fc2", "fc2", "out", "out")
    ]
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    _, groups = _resolve(seq)
    assert [g.stage for g in groups] == ["0", "0", "2", "2"]


def test_nested_modules_and_root_parameter():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))
            self.body = nn.Sequential(nn.Linear(2, 2), nn.Tanh())
            self.encoder = nn.ModuleDict({"proj": nn.Sequential(nn.Linear(2, 2))})

    names, groups = _resolve(Net())
    assert dict(zip(names, groups)) == {
        "scale": Groups("(root)", "(root)", "(root)"),
        "body.0.weight": Groups("body.0", "body", "body"),
        "body.0.bias": Groups("body.0", "body", "body"),
        "encoder.proj.0.weight": Groups("encoder.proj.0", "encoder.proj", "encoder"),
        "encoder.proj.0.bias": Groups("encoder.proj.0", "encoder.proj", "encoder"),
    }


class Transformerish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 4)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"attn": nn.Linear(4, 4), "mlp": nn.Linear(4, 4)}) for _ in range(3)
        )
        self.norm = nn.LayerNorm(4)


def test_user_mapping_with_regex_templates():
    model = Transformerish()
    names, groups = _resolve(model, {r"^(blocks\.(\d+))\.": (r"\1", r"stage\2"), r"^norm\.": "final"})
    by_name = dict(zip(names, groups))
    assert by_name["blocks.1.attn.weight"] == Groups("blocks.1.attn", "blocks.1", "stage1")
    assert by_name["norm.bias"] == Groups("norm", "final", "final")
    # names no rule matches keep their automatic groups (blocks is a stage of blocks here: embed is stem)
    assert by_name["embed.weight"] == auto_groups(model, ["embed.weight"])[0]


def test_user_mapping_first_rule_wins_and_string_target():
    model = Transformerish()
    names, groups = _resolve(model, {r"attn": "attention", r"^blocks\.": "blocks"})
    by_name = dict(zip(names, groups))
    assert by_name["blocks.0.attn.bias"] == Groups("blocks.0.attn", "attention", "attention")
    assert by_name["blocks.0.mlp.bias"] == Groups("blocks.0.mlp", "blocks", "blocks")


def test_user_callable():
    def spec(name):
        if name.startswith("blocks."):
            return (".".join(name.split(".")[:2]), "trunk")
        if name.startswith("norm."):
            return Groups("the-norm", "out", "out")
        return None

    names, groups = _resolve(Transformerish(), spec)
    by_name = dict(zip(names, groups))
    assert by_name["blocks.2.mlp.weight"] == Groups("blocks.2.mlp", "blocks.2", "trunk")
    assert by_name["norm.weight"] == Groups("the-norm", "out", "out")
    assert by_name["embed.weight"].layer == "embed"


def test_groups_reach_the_record(tmp_path):
    model = Transformerish()
    with gradscope.record(model, tmp_path / "rec", groups={r"^(blocks\.\d+)\.": r"\1"}) as recorder:
        model.norm(model.blocks[0]["mlp"](model.embed(torch.ones(1, 4)))).sum().backward()
    record = gradscope.load(tmp_path / "rec")
    assert recorder.meta["params"][2]["block"] == "blocks.0"
    assert record.names("block")[1:4] == ["blocks.0", "blocks.1", "blocks.2"]
    assert record.members("stage")["blocks.0"] == [
        "blocks.0.attn.weight", "blocks.0.attn.bias", "blocks.0.mlp.weight", "blocks.0.mlp.bias",
    ]


def test_bad_specs_raise():
    model = TinyMLP()
    with pytest.raises(GradscopeError, match="bad regular expression"):
        _resolve(model, {"(": "x"})
    with pytest.raises(GradscopeError, match="expected \\(block, stage\\)"):
        _resolve(model, lambda name: 3)
    with pytest.raises(GradscopeError, match="not int"):
        _resolve(model, 5)
    with pytest.raises(GradscopeError, match="bad regular expression"):
        gradscope.record(model, groups={"[": "x"})


def test_relative_name_and_owner():
    assert relative_name("layer2.1.conv1", "layer2") == "1.conv1"
    assert relative_name("layer2.1.conv1", "layer2.1") == "conv1"
    assert relative_name("layer2", "layer2") == "·"
    assert relative_name("layer20.conv", "layer2") == "layer20.conv"  # not a prefix at a dot
    assert relative_name("fc", "head") == "fc"
    assert owner_of("layer1.0.conv1.weight") == "layer1.0.conv1"
    assert owner_of("scale") == "(root)"
