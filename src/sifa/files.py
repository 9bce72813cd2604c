"""Files written atomically: readers see the old file or the whole new one, never a part."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def replace_atomically(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """Run ``write(temporary_path)``, then move the result onto ``path``. The temporary file is
    in the same folder (created if needed), so the move is atomic; it is removed on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The suffix is kept: some writers (torch.export.save) check it.
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
