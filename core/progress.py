"""Progress bars for long loops (tqdm), silent when disabled or when stderr is not a terminal."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(total: int, desc: str, initial: int = 0, enabled: bool = True, **extra):
    show = enabled and sys.stderr.isatty()
    return tqdm(total=total, initial=initial, desc=desc, disable=not show, dynamic_ncols=True, leave=False,
                **extra)
