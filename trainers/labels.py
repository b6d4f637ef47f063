"""What a robust-accuracy number measured, in words: the one rule every table, figure and CLI uses.

"AutoAttack" names Croce & Hein's standard L∞ suite only — APGD-CE, APGD-T, FAB-T and Square, in
that order, version ``standard``. Anything less is named by its attacks (``APGD-CE``,
``APGD-CE + APGD-T``), PGD by its steps (``PGD-20``); a PGD number standing in for an AutoAttack one
the poster reports says so, and a number computed under bf16 autocast says so too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .provenance import provenance_of

STANDARD_AUTOATTACK = ("apgd-ce", "apgd-t", "fab-t", "square")  # the standard L∞ version, in its order
ATTACK_NAMES = {"apgd-ce": "APGD-CE", "apgd-t": "APGD-T", "fab-t": "FAB-T", "square": "Square",
                "apgd-dlr": "APGD-DLR", "fab": "FAB", "clean": "clean"}
FALLBACK_NOTE = "fallback: AutoAttack not run"


def attacks_of(entry: Mapping[str, Any]) -> list[str]:
    """The attacks a stored result actually ran, in order (from its provenance, else its own fields)."""
    prov = provenance_of(entry)
    if prov is not None and prov.get("attacks"):
        return [str(a) for a in prov["attacks"]]
    attack = entry.get("attack")
    if attack == "autoattack":
        listed = entry.get("attacks_to_run") or [k for k in (entry.get("breakdown") or {}) if k != "clean"]
        return [str(a) for a in listed]
    if attack == "pgd":
        return [f"pgd-{int(entry.get('steps') or 20)}"]
    return [str(attack)] if attack else []


def is_standard_autoattack(entry: Mapping[str, Any]) -> bool:
    """Whether ``entry`` is the full standard AutoAttack (all four attacks, in order, version standard)."""
    return (entry.get("attack") == "autoattack" and tuple(attacks_of(entry)) == STANDARD_AUTOATTACK
            and entry.get("version", "standard") == "standard")


def attack_name(attack: str) -> str:
    """Display name of one attack: ``apgd-ce`` -> ``APGD-CE``, ``pgd-20`` -> ``PGD-20``."""
    return ATTACK_NAMES.get(attack, attack.upper() if attack.startswith("pgd") else attack)


def precision_of(entry: Mapping[str, Any]) -> str:
    """``float32`` or ``bf16``: the precision recorded in the result's provenance (float32 when unrecorded)."""
    prov = provenance_of(entry)
    return str(prov.get("precision", "float32")) if prov is not None else str(entry.get("precision", "float32"))


def robust_label(entry: Mapping[str, Any]) -> str:
    """What ``entry`` (an ``evaluation.json`` result, or a row built like one) measured, for a reader.

    ``AutoAttack`` for the standard suite, else the attacks joined by `` + ``; `` (fallback: AutoAttack
    not run)`` when the entry has ``"fallback": true`` (a PGD number in an AutoAttack column);
    `` (bf16)`` when its forward passes ran in bf16.
    """
    if is_standard_autoattack(entry):
        text = "AutoAttack"
    else:
        text = " + ".join(attack_name(a) for a in attacks_of(entry)) or "unknown attack"
    notes = [FALLBACK_NOTE] if entry.get("fallback") else []
    if precision_of(entry) == "bf16":
        notes.append("bf16")
    return f"{text} ({'; '.join(notes)})" if notes else text


def eps_label(eps: float) -> str:
    """8/255 for multiples of 1/255 (0 for none), else the number (0.1)."""
    if eps == 0:
        return "0"
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{eps:.6g}"
