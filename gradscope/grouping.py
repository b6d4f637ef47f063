"""Map each parameter to the groups gradscope aggregates over: layer, block and stage.

The rule, in one place (`auto_groups`; docs/format.md, "Grouping"):

* A *layer* is the module that owns the parameter (``encoder.layers.0.self_attn.out_proj``). Figures
  name it relative to its block (``self_attn.out_proj``), as the rows of a heatmap.
* A *block container* is a ``ModuleList`` or ``Sequential`` whose children (those holding parameters)
  are all of one class and have sub-modules, with two of them at least (one is enough when that class
  is repeated elsewhere in the model). The first one found from the root down on each branch is used;
  containers inside its blocks (a block's experts, sub-layer lists) are not.
* Its children are the *blocks* (``encoder.layers.0``, ``transformer.h.0``, ``model.layers.0``,
  ``blocks.0``, ``encoder.layer.0``, ResNet ``layer2.1``) and the container is their *stage*
  (``layer2``, ``transformer.h``).
* When every element of a block container has a direct child that is itself a block container and
  holds at least half of the element's parameters (timm ConvNeXt's ``stages.1.blocks``), the
  elements are the stages and the inner children the blocks: ``stages.1.blocks.0`` in ``stages.1``.
  The rest of such a stage (``stages.1.downsample``) is a block of its own.
* Parameters before the first stage form the ``stem`` (embeddings, patch embedding, conv stem) and
  those after the last the ``head`` (final norm, classifier, LM head); each is a column of its own.
* A model without block containers (an MLP) falls back to the module tree: block = the layer's parent
  module, stage = its top-level module. Anything else can be described with ``groups=`` (`resolve`).
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
BODY_SHARE = 0.5  # an inner block container holding this share of an element's parameters makes it a stage
WRAPPERS = ("_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod")  # left out of names


@dataclass(frozen=True)
class Groups:
    """The layer, block and stage one parameter belongs to."""

    layer: str
    block: str
    stage: str


GroupFn = Callable[[str], Union[Groups, "tuple[str, str]"]]
GroupSpec = Union[GroupFn, Mapping[str, Union[str, "tuple[str, str]"]], None]


@dataclass(frozen=True)
class BlockContainer:
    """A container of blocks: its path (``""`` for the model itself) and the stage its blocks belong to."""

    path: str
    stage: str


def owner_of(param_name: str) -> str:
    """The module path that owns ``param_name`` (``(root)`` for a parameter of the model itself)."""
    return param_name.rpartition(".")[0] or ROOT


def relative_name(layer: str, group: str) -> str:
    """``layer`` as seen from inside ``group``: ``layer2.1.conv1`` in ``layer2`` is ``1.conv1``.

    In the ``stem`` and ``head`` groups, which are no module, a layer keeps its full name.
    """
    if group in (STEM, HEAD):
        return layer
    if layer == group:
        return "·"
    prefix = group + "."
    return layer[len(prefix):] if layer.startswith(prefix) else layer


def clean_name(name: str) -> str:
    """``name`` without the module levels that FSDP1, activation checkpointing and compile insert."""
    return ".".join(part for part in name.split(".") if part not in WRAPPERS)


def _join(path: str, name: str) -> str:
    if name in WRAPPERS:
        return path
    return f"{path}.{name}" if path else name


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _elements(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The children of a container that hold parameters (activations and dropouts are skipped)."""
    return [(name, child) for name, child in module.named_children() if any(True for _ in child.parameters())]


def _uniform_class(module: nn.Module) -> type | None:
    """The one class of a container's parameter-holding children, when they are all of it and not leaves."""
    if not isinstance(module, (nn.ModuleList, nn.Sequential)):
        return None
    elements = [child for _, child in _elements(module)]
    if not elements or any(next(child.children(), None) is None for child in elements):
        return None
    classes = {type(child) for child in elements}
    return classes.pop() if len(classes) == 1 else None


def block_containers(model: nn.Module) -> list[BlockContainer]:
    """The block containers of ``model`` and their stages, in model order (see the module docstring)."""
    repeated = {
        cls for module in model.modules()
        if (cls := _uniform_class(module)) is not None and len(_elements(module)) >= 2
    }

    def is_container(module: nn.Module) -> bool:
        cls = _uniform_class(module)
        return cls is not None and (len(_elements(module)) >= 2 or cls in repeated)

    def body(element: nn.Module) -> str | None:
        total = _numel(element)
        for name, child in element.named_children():
            if is_container(child) and _numel(child) >= BODY_SHARE * total:
                return name
        return None

    def search(module: nn.Module, path: str) -> list[BlockContainer]:
        if is_container(module):
            elements = _elements(module)
            bodies = [body(child) for _, child in elements]
            if all(b is not None for b in bodies):
                return [
                    BlockContainer(_join(_join(path, name), str(b)), _join(path, name))
                    for (name, _), b in zip(elements, bodies)
                ]
            return [BlockContainer(path, path or ROOT)]
        found = []
        for name, child in module.named_children():
            found += search(child, _join(path, name))
        return found

    return search(model, "")


def auto_groups(model: nn.Module, names: Sequence[str]) -> list[Groups]:
    """Default grouping of ``names``: blocks and stages from block containers, else the module tree."""
    containers = block_containers(model)
    if not containers:
        return [_tree_groups(name) for name in names]
    # Stem and head are decided on the whole model, so that a filtered selection keeps them apart.
    everything = [clean_name(n) for n, _ in model.named_parameters()]
    by_name = dict(zip(everything, _block_groups(everything, containers)))
    return [by_name.get(name) or _block_groups([name], containers)[0] for name in names]


def _in_stage(name: str, containers: Sequence[BlockContainer]) -> Groups | None:
    layer = owner_of(name)
    for c in containers:
        prefix = c.path + "." if c.path else ""
        if name.startswith(prefix):
            return Groups(layer, prefix + name[len(prefix):].partition(".")[0], c.stage)
        if c.stage != c.path and name.startswith(c.stage + "."):  # a stage's own part outside its blocks
            return Groups(layer, c.stage + "." + name[len(c.stage) + 1:].partition(".")[0], c.stage)
    return None


def _block_groups(names: Sequence[str], containers: Sequence[BlockContainer]) -> list[Groups]:
    inside = [_in_stage(name, containers) for name in names]
    staged = [i for i, g in enumerate(inside) if g is not None]
    first, last = (staged[0], staged[-1]) if staged else (len(names), -1)
    groups = []
    for i, (name, group) in enumerate(zip(names, inside)):
        if group is not None:
            groups.append(group)
        elif i < first or i > last:
            outside = STEM if i < first else HEAD
            groups.append(Groups(owner_of(name), outside, outside))
        else:  # between two stages (an encoder's final norm before the decoder): the module tree
            groups.append(_tree_groups(name))
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
