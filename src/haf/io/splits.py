"""Official HANCOCK split files (``DataSplits_DataDictionaries/dataset_split_*.json``).

Arrays of records ``{"patient_id": "001", "dataset": "training" | "test"}``.
"""

from __future__ import annotations

from pathlib import Path

from haf.errors import HafInputError
from haf.io.records import read_json_records

SPLIT_VALUES: tuple[str, ...] = ("training", "test")


def read_split(path: str | Path) -> dict[str, str]:
    """patient_id -> ``training``/``test``; an unknown ``dataset`` value names its record."""
    path = Path(path)
    split: dict[str, str] = {}
    for i, record in enumerate(read_json_records(path), start=1):
        value = record.get("dataset")
        if value not in SPLIT_VALUES:
            raise HafInputError(
                path,
                f"expected one of {', '.join(SPLIT_VALUES)}, got {value!r}",
                where=f"record {i} (patient {record['patient_id']})",
                field="dataset",
            )
        split[record["patient_id"]] = value
    return split
