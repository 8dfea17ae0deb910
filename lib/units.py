"""Byte sizes as people write them ("24GB", "512 MiB") and as tables show them (MiB)."""
import re

MIB = 2.0**20
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*")


def parse_bytes(text) -> int:
    """Bytes in `text`: an int, or a number with a unit; KB/MB/GB/TB are powers of 10, KiB/MiB/GiB/TiB
    powers of 2 ("24GB" = 24e9, "24GiB" = 24 * 2**30). Raises ValueError naming the text."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = _SIZE.fullmatch(str(text))
    unit = match and match.group(2).lower()
    if not match or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a byte size (e.g. 24GB, 512MiB, 1000000)")
    return int(float(match.group(1)) * _UNITS[unit])


def mib(value) -> str:
    """`value` bytes as MiB text with two decimals; '-' for None."""
    return "-" if value is None else f"{value / MIB:.2f}"
