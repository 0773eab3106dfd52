"""Write a file so that readers see the old one or the whole new one, never a partial one.

```python
with atomic_path("out/model.keras") as tmp:   # out/.tmp-<pid>-model.keras
    model.save(tmp)                            # renamed over out/model.keras on success
write_bytes_atomically("out/model.tflite", data)
write_json_atomically("out/state.json", {"stage": 3})
```

The temporary file sits in the target's folder (so the rename stays on one file
system) and keeps the target's name as its suffix (Keras picks the format from
it). On any error, an interrupt included, it is removed and the target is left
as it was. The folder is created if needed.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Callable, Iterator, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[str]:
    """Yield a temporary path next to `path`; rename it to `path` if the block succeeds."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_bytes_atomically(path: PathLike, data: bytes) -> None:
    """Write `data` to `path` through `atomic_path`."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_json_atomically(path: PathLike, payload: Any, indent: Optional[int] = 2,
                          default: Optional[Callable[[Any], Any]] = None) -> None:
    """Write `payload` as JSON to `path` through `atomic_path`.

    `indent` and `default` (a converter for values ``json`` cannot write) are
    passed to ``json.dump``.
    """
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=indent, default=default)


__all__ = ["atomic_path", "write_bytes_atomically", "write_json_atomically"]
