"""How figures read in summaries and reports: three decimals, "n/a" where a figure is undefined."""


def num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:+.1f}%"
