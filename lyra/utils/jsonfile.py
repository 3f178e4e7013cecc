"""Reading a user's JSON file: size-limited, every failure (missing, too big, not UTF-8, not JSON,
nested too deeply) named with the file and the fix, never a raw decoder or RecursionError."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from lyra.utils.errors import LyraUsageError
from lyra.utils.limits import check_limit


def read_json(path: str | os.PathLike, fix: str) -> Any:
    """The parsed contents of ``path``.

    Args:
        path: the JSON file.
        fix: what the user should do when it is not readable (appended to the message).
    """
    p = Path(path)
    size = p.stat().st_size  # FileNotFoundError / PermissionError name the path
    check_limit("json_bytes", size, str(p))
    try:
        return json.loads(p.read_bytes())
    except RecursionError:
        raise LyraUsageError(f"{p} nests its JSON too deeply to read (thousands of brackets); {fix}") from None
    except ValueError as err:  # JSONDecodeError, or bytes that are not UTF-8
        raise LyraUsageError(f"{p} is not valid JSON ({err}); {fix}") from None


def is_number(value: object) -> bool:
    """A JSON number (int or float, not a bool, which Python counts as an int) that fits a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, float) or abs(value) < 2**1023  # JSON ints may have thousands of digits


def numbers(value: object, what: str, finite: bool = True) -> list:
    """``value`` checked to be a (possibly nested) list of numbers, returned as is.

    Raises ``LyraUsageError`` naming ``what`` at the first string, bool, null or non-finite entry."""
    stack = [(value, what)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
        elif not is_number(item):
            raise LyraUsageError(f"{where} is {item!r}, not a number; write numbers (no strings, booleans or null)")
        elif finite and not math.isfinite(item):
            raise LyraUsageError(f"{where} is {item!r}; write finite numbers (no NaN or Infinity)")
    return value  # type: ignore[return-value]
