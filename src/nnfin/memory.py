"""Memory checks: refuse sizes that cannot fit before anything is allocated.

Each place that decides an allocation (data generation, model construction, the finance
report) estimates its peak in bytes and calls :func:`require`, which compares the estimate
with :func:`available` memory and raises a one-line :class:`~nnfin.errors.ConfigError`
naming the field, its value, the estimate and the memory available::

    [data] n = 1000000000000: the data need ~233 TiB (1e+12 rows x 32 float64 values), more
    than the 21.3 GiB of memory available

Estimates below :data:`ALWAYS_FITS` bytes return at once, without reading the memory
available, so the check costs nothing for everyday sizes.

>>> require("n", 1000, 8_000, "the data")  # a few kB always fit
>>> require("n", 10**12, 8 * 10**12, "the data")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
nnfin.errors.ConfigError: n = 1000000000000: the data need ~7.28 TiB, more than the ... available
>>> format_bytes(3 * 2**30)
'3 GiB'
"""

from __future__ import annotations

import os
from typing import Any

from nnfin.errors import ConfigError

__all__ = ["ALWAYS_FITS", "available", "format_bytes", "format_count", "parse_count", "require"]

ALWAYS_FITS = 64 * 2**20  # estimates up to 64 MiB are never checked
_CGROUP = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current")
_CGROUP_V1 = ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
              "/sys/fs/cgroup/memory/memory.usage_in_bytes")


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _host_available() -> int | None:
    """MemAvailable of /proc/meminfo, else free physical pages, lowered by a cgroup limit."""
    free = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        free = None
    if free is None:
        try:
            pages = os.sysconf("SC_AVPHYS_PAGES") if "SC_AVPHYS_PAGES" in os.sysconf_names \
                else os.sysconf("SC_PHYS_PAGES")
            free = int(pages) * int(os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, OSError, ValueError):
            return None
        if free <= 0:
            return None
    for limit_path, usage_path in (_CGROUP, _CGROUP_V1):
        limit, usage = _read_int(limit_path), _read_int(usage_path)
        if limit is not None and usage is not None and limit < 2**60:
            free = min(free, max(0, limit - usage))
            break
    return free


def _device_kind(device: Any) -> tuple[str, Any]:
    if device is None:
        return "cpu", None
    text = str(device)
    return ("cuda", device) if text.startswith("cuda") else ("cpu", None)


def available(device: Any = None) -> int | None:
    """Bytes of memory free for new allocations on ``device`` (host memory by default).

    ``cuda`` devices report ``torch.cuda.mem_get_info``; CPU and MPS (unified memory) report
    the host's ``MemAvailable`` (or the free physical pages), capped by a cgroup limit.
    ``None`` when it cannot be told.

    >>> available() is None or available() > 0
    True
    """
    kind, dev = _device_kind(device)
    if kind == "cuda":
        try:
            import torch

            return int(torch.cuda.mem_get_info(dev)[0])
        except Exception:  # no CUDA runtime here: nothing to compare with
            return None
    return _host_available()


def format_bytes(nbytes: float) -> str:
    """``1536 -> '1.5 KiB'``, three significant digits, binary units up to EiB.

    >>> format_bytes(56 * 2**40), format_bytes(21.3 * 2**30), format_bytes(12)
    ('56 TiB', '21.3 GiB', '12 B')
    """
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024:
            return f"{value:.3g} {unit}"
        value /= 1024
    return f"{value:.3g} EiB"


def format_count(n: float) -> str:
    """A count for a size formula: plain below a million, else ``1e+12``.

    >>> format_count(1500), format_count(10**12)
    ('1500', '1e+12')
    """
    return f"{int(n)}" if n < 1_000_000 else f"{float(n):.3g}"


def parse_count(text: str, minimum: int | None = None) -> int:
    """A whole count from the command line: ``"20000"``, ``"1_000_000"`` or ``"1e12"``.

    Raises ``ValueError`` (a usage error on the command line) for fractions, non-numbers and,
    with ``minimum``, counts below it.

    >>> parse_count("1e12"), parse_count("1_000")
    (1000000000000, 1000)
    """
    raw = str(text).strip()
    try:
        value = int(raw)
    except ValueError:
        try:
            number = float(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a whole number") from None
        if not number == number or number in (float("inf"), float("-inf")) or number != int(number):
            raise ValueError(f"{raw!r} is not a whole number") from None
        value = int(number)
    if minimum is not None and value < minimum:
        raise ValueError(f"{raw!r} must be >= {minimum}")
    return value


def require(field: str, value: object, nbytes: float, what: str, *, device: Any = None,
            detail: str = "") -> None:
    """Raise a one-line :class:`ConfigError` when ``nbytes`` exceed the memory available.

    ``field = value`` is what the user set, ``what`` names the thing sized (``"the data"``,
    ``"the model"``),
    ``detail`` explains the estimate (``"1e+12 rows x 7 columns x 8 bytes"``). Estimates up
    to :data:`ALWAYS_FITS` return at once; so does an unknown amount of free memory.

    >>> require("[model] neurons", [6, 6], 1_000, "the model")
    """
    if nbytes <= ALWAYS_FITS:
        return
    free = available(device)
    if free is None or nbytes <= free:
        return
    where = f" on {device}" if _device_kind(device)[0] == "cuda" else ""
    how = f" ({detail})" if detail else ""
    verb = "need" if what.endswith(("s", "data")) else "needs"
    raise ConfigError(f"{field} = {value!r}: {what} {verb} ~{format_bytes(nbytes)}{how}, more than the "
                      f"{format_bytes(free)} of memory available{where}")
