"""Map each parameter to the groups gradscope aggregates over: layer, block and stage.

A *layer* is the module that owns the parameter (``layer2.1.conv1`` owns ``layer2.1.conv1.weight``).
A *block* is a residual block (``layer2.1``) and a *stage* the sequence of blocks it sits in
(``layer2``); parameters before the first stage form the ``stem`` and those after the last the
``head``. Models without residual stages fall back to the module tree: block = the layer's parent
module, stage = its top-level module. Anything else can be described by the user (see `resolve`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Union

from torch import nn

from .errors import GradscopeError

LEVELS: tuple[str, ...] = ("param", "layer", "block", "stage")
STEM, HEAD, ROOT = "stem", "head", "(root)"


@dataclass(frozen=True)
class Groups:
    """The layer, block and stage one parameter belongs to."""

    layer: str
    block: str
    stage: str


GroupFn = Callable[[str], Union[Groups, "tuple[str, str]"]]
GroupSpec = Union[GroupFn, Mapping[str, Union[str, "tuple[str, str]"]], None]


def owner_of(param_name: str) -> str:
    """The module path that owns ``param_name`` (``(root)`` for a parameter of the model itself)."""
    return param_name.rpartition(".")[0] or ROOT


def relative_name(layer: str, group: str) -> str:
    """``layer`` as seen from inside ``group``: ``layer2.1.conv1`` in ``layer2`` is ``1.conv1``."""
    if layer == group:
        return "·"
    prefix = group + "."
    return layer[len(prefix):] if layer.startswith(prefix) else layer


def residual_stages(model: nn.Module) -> list[str]:
    """Names of top-level containers whose every element is a block (a module with sub-modules).

    This matches torchvision ResNets (``layer1``..``layer4`` of BasicBlock/Bottleneck), CIFAR-style
    ResNets and most residual designs, without importing any model library.
    """
    stages = []
    for name, child in model.named_children():
        is_container = isinstance(child, (nn.Sequential, nn.ModuleList)) and len(child) > 0
        if is_container and all(len(list(block.children())) > 0 for block in child.children()):
            stages.append(name)
    return stages


def auto_groups(model: nn.Module, names: Sequence[str]) -> list[Groups]:
    """Default grouping: residual stages when the model has them, else the module tree."""
    stages = residual_stages(model)
    if not stages:
        return [_tree_groups(name) for name in names]
    # Stem and head are decided on the whole model, so that a filtered selection keeps them apart.
    everything = [n for n, _ in model.named_parameters()]
    by_name = dict(zip(everything, _residual_groups(everything, stages)))
    return [by_name.get(name) or _residual_groups([name], stages)[0] for name in names]


def _residual_groups(names: Sequence[str], stages: list[str]) -> list[Groups]:
    seen_stage = False
    groups = []
    for name in names:
        layer = owner_of(name)
        top, _, rest = name.partition(".")
        if top in stages:
            seen_stage = True
            block = f"{top}.{rest.partition('.')[0]}"
            groups.append(Groups(layer, block, top))
        else:
            outside = HEAD if seen_stage else STEM
            groups.append(Groups(layer, outside, outside))
    return groups


def _tree_groups(name: str) -> Groups:
    layer = owner_of(name)
    if layer == ROOT:
        return Groups(layer, ROOT, ROOT)
    parent = layer.rpartition(".")[0] or layer
    return Groups(layer, parent, layer.partition(".")[0])


def _from_mapping(spec: Mapping[str, str | tuple[str, str]]) -> Callable[[str], Groups | None]:
    rules = []
    for pattern, target in spec.items():
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise GradscopeError(f"groups: bad regular expression {pattern!r}: {exc}") from None
        block_t, stage_t = (target, target) if isinstance(target, str) else target
        rules.append((regex, block_t, stage_t))

    def lookup(name: str) -> Groups | None:
        for regex, block_t, stage_t in rules:
            match = regex.search(name)
            if match:
                return Groups(owner_of(name), match.expand(block_t), match.expand(stage_t))
        return None

    return lookup


def resolve(model: nn.Module, names: Sequence[str], spec: GroupSpec = None) -> list[Groups]:
    r"""Groups for every parameter name.

    Args:
        model: the (unwrapped) model, used for automatic rules.
        names: parameter names as in ``model.named_parameters()``.
        spec: ``None`` for automatic grouping; a callable ``name -> (block, stage)`` (or a `Groups`);
            or a mapping ``regex -> block`` / ``regex -> (block, stage)`` whose templates may use the
            match's groups (``{r"^(blocks\.\d+)\.": r"\1"}``). Names a mapping does not match, or a
            callable returns ``None`` for, keep their automatic groups.
    """
    automatic = auto_groups(model, names)
    if spec is None:
        return automatic
    if isinstance(spec, Mapping):
        lookup: Callable[[str], object] = _from_mapping(spec)
    elif callable(spec):
        lookup = spec
    else:
        raise GradscopeError(
            f"groups must be None, a callable or a mapping of regex to group, not {type(spec).__name__}"
        )
    resolved = []
    for name, default in zip(names, automatic):
        got = lookup(name)
        if got is None:
            resolved.append(default)
        elif isinstance(got, Groups):
            resolved.append(got)
        elif isinstance(got, tuple) and len(got) == 2 and all(isinstance(g, str) for g in got):
            resolved.append(Groups(default.layer, got[0], got[1]))
        else:
            raise GradscopeError(f"groups callable returned {got!r} for {name!r}; expected (block, stage)")
    return resolved
