"""What produced a number: the checkpoint's sha256, the images, the attacks, ε, precision, seed, batch size.

Every stored result (``evaluation.json`` entries and sweeps, the AutoAttack resume state,
``results.json``, the attribution maps' ``meta.json``) carries a ``provenance`` object written by
`Provenance.to_json`. A result is *current* only while the checkpoint file it names still has the
sha256 it recorded (`freshness`); otherwise — the run was retrained, resumed or overwritten, or the
result predates provenance — it is *stale*: readers never show or summarise it as current, and the
next evaluation recomputes it.

Hashing a checkpoint reads the whole file, so digests are cached per (path, size, mtime, inode):
`save_checkpoint` replaces files by rename, which changes the inode, so a cached digest never
outlives the file it was taken of. The digest is also kept beside the file (``best.pt.sha256``,
with the size and mtime it was taken at), so a fresh process — the dashboard listing a hundred
runs — reads 64 bytes per checkpoint instead of hundreds of megabytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import TrainersError
from .run_folder import CHECKPOINTS, RunFolder

PRECISIONS = ("float32", "bf16")
DEFAULT_CHECKPOINT_FILES = tuple(RunFolder(Path()).checkpoint(name).as_posix() for name in CHECKPOINTS)
DIGEST_SUFFIX = ".sha256"
_CHUNK = 1 << 20
_digests: dict[tuple[str, int, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, cached while the file is unchanged (in memory and beside the file)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key not in _digests:
        _digests[key] = _stored_digest(path, stat) or _hash_and_store(path, stat)
    return _digests[key]


def _stored_digest(path: Path, stat: os.stat_result) -> str | None:
    """The digest kept beside ``path`` if it was taken of a file of this size and mtime."""
    # no sidecar, or one that is unreadable or malformed: None, and the caller hashes the file itself
    with contextlib.suppress(OSError, ValueError):
        digest, size, mtime_ns = path.with_name(path.name + DIGEST_SUFFIX).read_text().split()
        if int(size) == stat.st_size and int(mtime_ns) == stat.st_mtime_ns and len(digest) == 64:
            int(digest, 16)
            return digest
    return None


def _hash_and_store(path: Path, stat: os.stat_result) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    hex_digest = digest.hexdigest()
    sidecar = path.with_name(path.name + DIGEST_SUFFIX)
    with contextlib.suppress(OSError):  # best effort: a read-only runs folder just hashes again next time
        tmp = sidecar.with_name(f".{sidecar.name}.{os.getpid()}.tmp")
        tmp.write_text(f"{hex_digest} {stat.st_size} {stat.st_mtime_ns}\n")
        os.replace(tmp, sidecar)
    return hex_digest


@dataclass(frozen=True)
class Provenance:
    """Everything a stored number depends on, so two numbers can be told comparable or not.

    Attributes:
        checkpoint: ``best``, ``last`` (or a checkpoint file's stem).
        checkpoint_file: the checkpoint's path relative to the run folder (``checkpoints/best.pt``).
        checkpoint_sha256: hex sha256 of that file when the result was computed.
        dataset: the data set's name (``cifar10``).
        split: which split the images come from (``test``).
        n: how many images.
        indices: which images; None means the first ``n`` of the split, in order.
        eps: the L∞ radius in pixel units (0 for clean accuracy; None where no attack applies).
        attacks: the attacks actually run, in order (``["apgd-ce", "apgd-t"]``, ``["pgd-20"]``, ``["clean"]``).
        precision: ``float32`` or ``bf16``: the dtype the model's forward passes ran in.
        seed: the seed of the attacks' random starts (or of the image selection).
        batch_size: images per forward pass.
    """

    checkpoint: str
    checkpoint_file: str
    checkpoint_sha256: str
    dataset: str
    split: str
    n: int
    eps: float | None
    attacks: list[str]
    precision: str
    seed: int
    batch_size: int
    indices: list[int] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise TrainersError(f"unknown precision {self.precision!r}; expected one of: {', '.join(PRECISIONS)}")

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return asdict(self)

    def with_(self, **changes: Any) -> Provenance:
        """A copy with ``changes`` (another attack, ε, ...) on the same checkpoint and images."""
        return Provenance(**{**self.to_json(), **changes})


def of_checkpoint(run_dir: Path, checkpoint: Path, *, dataset: str, n: int, eps: float | None,
                  attacks: Sequence[str], seed: int, batch_size: int, precision: str = "float32",
                  split: str = "test", indices: Sequence[int] | None = None) -> Provenance:
    """The provenance of a result computed now from ``checkpoint`` (a file of the run in ``run_dir``)."""
    try:
        relative = checkpoint.resolve().relative_to(Path(run_dir).resolve()).as_posix()
    except ValueError:
        relative = str(checkpoint)
    return Provenance(checkpoint=checkpoint.stem, checkpoint_file=relative,
                      checkpoint_sha256=file_sha256(checkpoint), dataset=dataset, split=split, n=int(n),
                      eps=None if eps is None else float(eps), attacks=list(attacks), precision=precision,
                      seed=int(seed), batch_size=int(batch_size),
                      indices=None if indices is None else [int(i) for i in indices])


def fingerprints(run_dir: Path, files: Iterable[str] = DEFAULT_CHECKPOINT_FILES,
                 confine: Path | None = None) -> dict[str, str]:
    """Relative checkpoint path -> its current sha256, for those of ``files`` that exist in ``run_dir``.

    Only files whose path stays inside ``run_dir`` and that resolve (symlinks followed) inside
    ``confine`` (the dashboard's runs folder; default ``run_dir``) are read: a path taken from a stored
    JSON file never makes us hash a file elsewhere.
    """
    root = Path(run_dir).resolve()
    fence = Path(confine).resolve() if confine is not None else root
    out = {}
    for name in dict.fromkeys(files):
        if (root / name).resolve().is_relative_to(fence) and Path(os.path.normpath(root / name)).is_relative_to(root):
            path = (root / name).resolve()
            if path.is_file():
                out[name] = file_sha256(path)
    return out


def referenced_files(*results: Mapping[str, Any]) -> list[str]:
    """The checkpoint files (relative paths) that ``results`` name in their provenance."""
    return [str(p["checkpoint_file"]) for r in results if (p := provenance_of(r)) is not None]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_FIELD_CHECKS = {
    "checkpoint": lambda v: isinstance(v, str), "checkpoint_file": lambda v: isinstance(v, str),
    "checkpoint_sha256": lambda v: isinstance(v, str), "dataset": lambda v: isinstance(v, str),
    "split": lambda v: isinstance(v, str), "n": _is_int, "seed": _is_int, "batch_size": _is_int,
    "precision": lambda v: v in PRECISIONS,
    "attacks": lambda v: isinstance(v, list) and all(isinstance(a, str) for a in v),
    "eps": lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)),
    "indices": lambda v: v is None or (isinstance(v, list) and all(_is_int(i) for i in v)),
}


def provenance_of(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``provenance`` object a stored result carries, or None when it has none or a malformed one.

    A result without a well-formed provenance (written before provenance, or a damaged file) cannot be
    tied to a checkpoint, so it is never current.
    """
    found = result.get("provenance") if isinstance(result, Mapping) else None
    if not isinstance(found, Mapping) or not all(key in found and check(found[key])
                                                 for key, check in _FIELD_CHECKS.items()):
        return None
    return dict(found)


def freshness(result: Mapping[str, Any], current: Mapping[str, str]) -> str | None:
    """Why ``result`` is stale, in words, or None when it is current.

    Args:
        result: a stored result (an ``evaluation.json`` entry or sweep, a ``results.json`` provenance
            holder, attribution meta).
        current: relative checkpoint path -> sha256 of the run's checkpoint files now (`fingerprints`).
    """
    prov = provenance_of(result)
    if prov is None:
        return "no valid checkpoint fingerprint (written before results recorded provenance, or damaged)"
    file = prov.get("checkpoint_file")
    now = current.get(str(file))
    if now is None:
        return f"its checkpoint {file} no longer exists"
    if now != prov["checkpoint_sha256"]:
        return f"its checkpoint {file} has changed since (sha256 {prov['checkpoint_sha256'][:12]} -> {now[:12]})"
    return None


def is_current(result: Mapping[str, Any], current: Mapping[str, str]) -> bool:
    """Whether ``result`` was computed from the checkpoint file as it is now (see `freshness`)."""
    return freshness(result, current) is None


def stale_reason(run_dir: Path, result: Mapping[str, Any], confine: Path | None = None) -> str | None:
    """`freshness` of one stored result of the run in ``run_dir`` (attribution meta, an evaluation entry).

    Reads the checkpoint files' digests itself; ``confine`` as in `fingerprints`.
    """
    return freshness(result, fingerprints(run_dir, [*DEFAULT_CHECKPOINT_FILES, *referenced_files(result)], confine))


def same_images(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two provenances scored the same images of the same checkpoint (so their numbers pair)."""
    keys = ("checkpoint_sha256", "dataset", "split", "n", "indices")
    return all(a.get(k) == b.get(k) for k in keys)


def current_results(run_dir: Path, evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """``evaluation`` keeping only the results and sweeps of the run's checkpoints as they are now."""
    results, sweeps = dict(evaluation.get("results") or {}), dict(evaluation.get("sweeps") or {})
    now = fingerprints(run_dir, [*DEFAULT_CHECKPOINT_FILES, *referenced_files(*results.values(), *sweeps.values())])
    return {**evaluation, "results": {k: e for k, e in results.items() if is_current(e, now)},
            "sweeps": {k: s for k, s in sweeps.items() if is_current(s, now)}}


def results_provenance(run_dir: Path, checkpoints: Mapping[str, Path], *, dataset: str, n: int,
                       attacks: Sequence[str], eps: float | None, seed: int, batch_size: int) -> dict[str, Any]:
    """``results.json``'s ``provenance``: for ``best`` and ``last``, the checkpoint file its scores came from.

    Args:
        run_dir: the run folder.
        checkpoints: ``{"best": path, "last": path}``; a run selecting on ``last`` passes last.pt for both.
        dataset: the data set's name.
        n: how many test images were scored (the first ``n``).
        attacks: what was measured (``["clean", "pgd-20"]``).
        eps: the PGD radius (0 for clean only).
        seed: the seed of PGD's random start.
        batch_size: images per forward pass.
    """
    return {which: of_checkpoint(run_dir, path, dataset=dataset, n=n, eps=eps, attacks=attacks, seed=seed,
                                 batch_size=batch_size).to_json()
            for which, path in checkpoints.items()}
