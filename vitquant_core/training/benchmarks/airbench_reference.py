"""The authors' own airbench94 on the CIFAR-10 copy at hand: a check on data_copy_probe.py.

data_copy_probe.py re-implements airbench94 (Jordan 2024) to measure what the JPEG copy
costs. This script runs the authors' released package instead, ``airbench==0.1.8`` from
PyPI, on the same copy, so that the two figures side by side show whether the
re-implementation is faithful. The package is written for a CUDA GPU in fp16; the edits
below change only where it runs (CPU, fp32) and its GPU timer, never the recipe, and each
one must match the released source exactly or the script stops.

    .venv/bin/python vitquant_core/training/benchmarks/airbench_reference.py               # about 35 min on 2 CPU cores
    .venv/bin/python vitquant_core/training/benchmarks/airbench_reference.py --work /tmp/ab --seed 1

It prints the package's own per-epoch table; its last row's ``tta_val_acc`` is the figure to
set beside data_copy_probe.py's "with TTA".
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

from vitquant_core.data import load_cifar10

VERSION = "0.1.8"

# (file, released text, CPU text): device and dtype only
PATCHES = [
    ("lib_airbench94.py", "net = net.half().cuda()", "net = net.float()"),
    ("utils.py", "map_location=torch.device(gpu)", 'map_location="cpu"'),
    ("utils.py", "self.images.half()", "self.images.float()"),
    ("utils.py", "torch.cuda.Event(enable_timing=True)", "_Timer()"),
    ("utils.py", "torch.cuda.synchronize()", "pass"),
    ("utils.py", "import torchvision.transforms as T\n",
     "import torchvision.transforms as T\nimport time\n\n\nclass _Timer:  # a CPU stand-in for the GPU event timer\n"
     "    def record(self):\n        self.t = time.perf_counter()\n\n"
     "    def elapsed_time(self, end):\n        return 1e3 * (end.t - self.t)\n"),
]


def patch(package_dir: Path) -> None:
    """Apply PATCHES to the unpacked package; refuse a source they do not match."""
    for name, old, new in PATCHES:
        path = package_dir / name
        text = path.read_text()
        if old not in text:
            raise SystemExit(f"{path} does not contain {old!r}: not the released airbench {VERSION}; "
                             "the edits would not be the device-only ones they are meant to be")
        path.write_text(text.replace(old, new))


def write_data(dest: Path, data_root: str | None, seed: int) -> None:
    """The copy at hand in the package's format (uint8 N x H x W x C), in a shuffled order:
    the package whitens its first layer from the first 5000 images, and the decoded copy is
    ordered by class."""
    dest.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        s = load_cifar10(split, data_root)
        order = torch.randperm(len(s), generator=torch.Generator().manual_seed(seed))
        torch.save({"images": s.images[order].permute(0, 2, 3, 1).contiguous(), "labels": s.labels[order],
                    "classes": list(s.classes)}, dest / f"{split}.pt")
        print(f"{split}: {len(s)} images from {s.root} ({s.describe()['copy']})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default=None, help="working folder (default: a new temporary one)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="airbench-"))
    subprocess.run([sys.executable, "-m", "pip", "download", f"airbench=={VERSION}", "--no-deps", "--no-binary",
                    ":all:", "-d", str(work), "-q"], check=True)
    with tarfile.open(work / f"airbench-{VERSION}.tar.gz") as tar:
        tar.extractall(work, filter="data")
    source = work / f"airbench-{VERSION}"
    patch(source / "airbench")
    write_data(work / "cifar10", args.data_root, args.seed)
    # the package reads ./cifar10/{train,test}.pt
    subprocess.run([sys.executable, "-c", f"import sys, torch; sys.path.insert(0, {str(source)!r}); "
                    f"torch.manual_seed({args.seed}); import airbench; airbench.train94()"], cwd=work, check=True)


if __name__ == "__main__":
    main()
