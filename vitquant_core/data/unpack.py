"""Unpacking the CIFAR-10 JPEG archives: each split appears whole or not at all.

A split is unpacked into a temporary folder beside its target and renamed into place only
once its archive has been read to the end, so an interrupted run or a truncated archive
leaves no half-unpacked split behind.
"""
from __future__ import annotations

import gzip
import os
import shutil
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path

from ..io import atomic_write
from .locate import REPO_ROOT, DataError, DataNotFoundError


def _unpack_split(archive: Path, dest: Path, split: str) -> None:
    tmp = Path(tempfile.mkdtemp(dir=dest, prefix=f".{split}.unpacking-"))
    try:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
        except (EOFError, tarfile.TarError, zlib.error, gzip.BadGzipFile) as e:
            sums = archive.parent / "SHA256SUMS"
            check = f" (check with `sha256sum -c SHA256SUMS` in {archive.parent})" if sums.exists() else ""
            raise DataError(f"{archive} is truncated or corrupt ({type(e).__name__}: {e}): copy it again"
                            f"{check}; nothing was unpacked") from e
        if not (tmp / split).is_dir():
            found = ", ".join(sorted(p.name for p in tmp.iterdir())[:5]) or "nothing"
            raise DataError(f"{archive} does not hold a {split}/ folder (it holds {found}): expected "
                            f"{split}/<class>/*.jpg, the CIFAR-10 JPEG copy's layout")
        if (dest / split).exists():  # left by an unpack that never finished
            shutil.rmtree(dest / split)
        os.replace(tmp / split, dest / split)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def unpack_cifar10_jpeg(source: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Unpack ``train.tar.gz`` and ``test.tar.gz`` from ``source`` into ``dest`` (idempotent)."""
    source, dest = Path(source), Path(dest)
    if not source.is_dir():
        raise DataNotFoundError(f"--from {source}: no such folder; point it at the folder holding "
                                "the CIFAR-10 JPEG archives (train.tar.gz, test.tar.gz)")
    dest.mkdir(parents=True, exist_ok=True)
    for split in ("test", "train"):
        marker = dest / f".{split}.complete"
        if marker.exists() and (dest / split).is_dir():
            continue
        archive = source / f"{split}.tar.gz"
        if not archive.exists():
            raise DataNotFoundError(f"{archive} not found: point --from at the folder holding "
                                    "the CIFAR-10 JPEG archives (train.tar.gz, test.tar.gz)")
        marker.unlink(missing_ok=True)
        _unpack_split(archive, dest, split)
        atomic_write(marker, "")
    return dest


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m vitquant_core.data", description="Prepare data sets.")
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("unpack", help="unpack the CIFAR-10 JPEG archives (train.tar.gz, test.tar.gz)")
    u.add_argument("--from", dest="source", required=True, help="folder holding the archives")
    u.add_argument("--to", dest="dest", default=str(REPO_ROOT / ".cache" / "data" / "cifar10-jpeg"))
    args = p.parse_args(argv)
    try:
        dest = unpack_cifar10_jpeg(args.source, args.dest)
    except (DataError, DataNotFoundError) as e:  # bad input: a message, not a traceback
        sys.exit(f"{p.prog} unpack: error: {e}")
    print(f"CIFAR-10 JPEG copy ready in {dest}")
