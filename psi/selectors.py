"""Selectors: the entity identifiers both sides compare, as the OPRF's inputs.

A selector's input is its UTF-8 encoding, compared byte for byte: normalise (case, spacing,
Unicode form) upstream, identically on both sides. Sets are deduplicated keeping the first
occurrence's position, so duplicates neither cost evaluations nor show up as equal blinded
elements. Selectors are never logged.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterable
from pathlib import Path

from psi.curve import Packed
from psi.oprf import MAX_INPUT_BYTES

__all__ = ["SelectorSet", "load_selectors_csv"]


@dataclasses.dataclass(frozen=True, slots=True)
class SelectorSet:
    """Distinct selectors in first-seen order, with their packed OPRF inputs."""

    items: tuple[str, ...]
    inputs: Packed = dataclasses.field(repr=False)

    @classmethod
    def of(cls, selectors: Iterable[str]) -> SelectorSet:
        """Deduplicate and encode; ``ValueError`` for a selector over 65535 UTF-8 bytes."""
        items = tuple(dict.fromkeys(selectors))
        encoded = [s.encode("utf-8") for s in items]
        if any(len(e) > MAX_INPUT_BYTES for e in encoded):
            msg = "a selector is longer than 65535 bytes"
            raise ValueError(msg)
        return cls(items, Packed.of(encoded))

    def __len__(self) -> int:
        return len(self.items)


def load_selectors_csv(path: Path, column: str | int = 0, *, header: bool = True) -> SelectorSet:
    """The selectors in one column of a CSV file (UTF-8), stripped, blank cells skipped.

    ``column`` is a header name (then ``header`` must be true) or a zero-based index. Raises
    ``ValueError`` for an unknown column name and ``OSError`` if the file cannot be read.
    """
    with path.open(newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        index = column if isinstance(column, int) else -1
        if header:
            names = next(rows, [])
            if isinstance(column, str):
                if column not in names:
                    msg = "no such column in the CSV header"
                    raise ValueError(msg)
                index = names.index(column)
        elif isinstance(column, str):
            msg = "a column name needs a header row"
            raise ValueError(msg)
        cells = (row[index].strip() for row in rows if len(row) > index)
        return SelectorSet.of(cell for cell in cells if cell)
