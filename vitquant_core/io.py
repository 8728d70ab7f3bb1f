"""Writing files so that a reader sees the old file or the new one, never half of one.

Every file the project writes (results, cached rows, checkpoints, cards, decoded data,
training logs) goes through :func:`atomic_write`: the content is written to a temporary
file in the same folder and renamed over the target, which POSIX makes atomic.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, content: str | bytes | Callable[[Path], None]) -> Path:
    """Write ``content`` to ``path`` atomically and return the path.

    ``content`` is text, bytes, or a function that writes the temporary file it is given
    (for writers that want a path, such as ``safetensors.torch.save_file``). The file gets
    the mode an ordinary ``open()`` would give it (0666 less the umask), not ``mkstemp``'s
    0600. The parent folder is created if missing. On any error the temporary file is
    removed and the old file, if any, is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        if callable(content):
            os.close(fd)
            content(tmp)
        else:
            data = content.encode() if isinstance(content, str) else content
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
