"""One plotting style for every chapter (seaborn, colour-blind palette)."""

from __future__ import annotations

import matplotlib as mpl
import seaborn as sns

PALETTE = "colorblind"


def set_theme() -> None:
    """Set the book-wide matplotlib/seaborn theme; chapters call it via ``tvlib.book.start``."""
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE)
    mpl.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "figure.figsize": (6.4, 4.0),
                         "axes.titlesize": "medium"})
