"""argparse types shared by the ``lyra`` commands: values are validated, never defaulted.

A 0, a negative, NaN, a fraction where a count is meant, a port outside 1..65535 or a device torch
does not know is refused when the command line is parsed, with the option and the accepted range,
instead of silently falling back to a default (``--fov 0`` used to mean "the decoder's fov").
"""

from __future__ import annotations

import argparse
import math

import torch


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}") from None
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1 ("3"; not "0", "-2", "2.5", "nan")."""
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    """A whole number >= 0 ("0", "3"; not "-1", "2.5")."""
    return _whole_number(text, 0)


def finite_float(text: str) -> float:
    value = _number(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = _number(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def float_in(low: float, high: float, what: str):
    """A type accepting finite numbers in [low, high] (``what`` names the quantity in the message)."""
    def parse(text: str) -> float:
        value = _number(text)
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"{what} must lie in [{low:g}, {high:g}], got {text!r}")
        return value
    parse.__name__ = what.split()[0]  # argparse names the type in "invalid <name> value"
    return parse


FPS = float_in(1.0, 240.0, "fps (frames per second)")
FOV = float_in(1.0, 170.0, "fov (horizontal field of view in degrees)")


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is a whole number in 1..65535, got {text!r}")
    return value


def device(text: str) -> str:
    """A torch device this machine has ("cpu", "cuda", "cuda:1", "mps")."""
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"device {text!r} needs CUDA, which this machine does not have; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"device {text!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"device {text!r} is not available on this machine; use cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"device {text!r} is not supported; use cpu, cuda or cuda:N")
    return text


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line (``prog: error: ... (see prog --help)``),
    exit status 2, like every other error of the ``lyra`` commands."""

    def error(self, message: str):  # noqa: D102  (argparse's hook)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
