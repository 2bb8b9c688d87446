"""How figures read in summaries, reports and the monitor: three decimals, "n/a" where undefined."""

from typing import Sequence

MISSING = "n/a"  # an undefined figure (a rate without rows, an interval without defined resamples)


def num(value: float | None, digits: int = 3, *, missing: str = MISSING) -> str:
    """0.123"""
    return missing if value is None else f"{value:.{digits}f}"


def signed(value: float | None, digits: int = 3, *, missing: str = MISSING) -> str:
    """+0.123: a change."""
    return missing if value is None else f"{value:+.{digits}f}"


def percent(value: float | None, digits: int = 1, *, sign: bool = True, missing: str = MISSING) -> str:
    """A share as a percentage: +12.3% (a relative change) or, with sign=False, 12.3% (a rate)."""
    if value is None:
        return missing
    return f"{100 * value:+.{digits}f}%" if sign else f"{value:.{digits}%}"


def interval(bounds: Sequence[float | None] | None, digits: int = 3, *, sign: bool = False,
             missing: str = MISSING) -> str:
    """[0.100, 0.200] (with sign=True: [-0.010, +0.020], for an interval of a change)."""
    if not bounds or bounds[0] is None:
        return missing
    form = f"+.{digits}f" if sign else f".{digits}f"
    return f"[{bounds[0]:{form}}, {bounds[1]:{form}}]"
