"""The published double-pole figures ``bench/dpnv.py`` prints next to its own, each with its
citation and how far it was confirmed (see that module's docstring)."""

from __future__ import annotations

from dataclasses import dataclass

GOMEZ_T4 = "Gomez, Schmidhuber & Miikkulainen, JMLR 9 (2008), Table 4"
SECOND_HAND = "second-hand: tachsin/genoxide examples/double_pole_no_velocities/README.md"
SM2002 = "Stanley & Miikkulainen, Evol. Comput. 10(2) (2002); table number unconfirmed"
UNCONFIRMED = "unconfirmed: quoted from issue 8, source not read"


@dataclass(frozen=True)
class Published:
    """One published figure: ``value`` (evaluations, or starts of 625), citation, status."""

    key: str
    fitness: str
    method: str
    value: int
    citation: str
    status: str


PUBLISHED = [
    Published("T4d", "damping", "cosyne", 3416, GOMEZ_T4, SECOND_HAND),
    Published("T4d", "damping", "cmaes", 6061, GOMEZ_T4, SECOND_HAND),
    Published("T4d", "damping", "neat", 6929, GOMEZ_T4, SECOND_HAND),
    Published("T4d", "damping", "esp", 26342, GOMEZ_T4, SECOND_HAND),
    Published("T4d", "damping", "cne", 87623, GOMEZ_T4, SECOND_HAND),
    Published("T4d", "damping", "sane", 451612, GOMEZ_T4, SECOND_HAND),
    Published("T4s", "standard", "cosyne", 1249, GOMEZ_T4, UNCONFIRMED),
    Published("T4s", "standard", "cmaes", 3521, GOMEZ_T4, UNCONFIRMED),
    Published("T4s", "standard", "esp", 7374, GOMEZ_T4, UNCONFIRMED),
    Published(
        "NES", "standard", "snes", 410, "Wierstra et al., JMLR 15 (2014), Sec. 5", UNCONFIRMED
    ),
    Published(
        "NES", "standard", "xnes", 410, "Wierstra et al., JMLR 15 (2014), Sec. 5", UNCONFIRMED
    ),
    Published("SM2", "generalization", "ce", 300, SM2002, SECOND_HAND),
    Published("SM2", "generalization", "esp", 289, SM2002, SECOND_HAND),
    Published("SM2", "generalization", "neat", 286, SM2002, SECOND_HAND),
]


def published(fitness: str, method: str) -> Published | None:
    """The published figure for ``fitness`` and ``method`` (None if the papers give none)."""
    return next((p for p in PUBLISHED if (p.fitness, p.method) == (fitness, method)), None)


def mark(paper: Published | None) -> str:
    """``3,416 [T4d]``; ``1,249 [T4s]?`` when the figure is unconfirmed; ``-`` if none."""
    if paper is None:
        return "-"
    return f"{paper.value:,} [{paper.key}]" + ("?" if paper.status == UNCONFIRMED else "")


def print_published() -> None:
    """Every published figure with its citation and status (the table's footnotes)."""
    print("\npublished: evaluations to solve (mean) / generalisation of 625; ? = unconfirmed")
    for p in PUBLISHED:
        print(f"  [{p.key}] {p.fitness:<14} {p.method:<7} {p.value:>8,}  {p.citation}; {p.status}")
