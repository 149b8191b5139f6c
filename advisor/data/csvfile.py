"""CSV files: one example per line, numeric feature columns and one target column.

The first line is a header when any of its fields is not a number. The target
column is the last one unless `--target` names another, by header name or by
0-based position (negative positions count from the end). Every other column
must be numeric; "nan" and "inf" parse as floats and are then rejected by
validation with their line number. Blank lines are skipped.

The file is read into memory whole, as Python strings first, so parsing
takes several times the file's size in memory. Use npz for data that does
not fit.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from advisor.data.bundle import RawDataset
from advisor.errors import DataError


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _target_column(spec: str, path: Path, target: str | None, header: list[str] | None, n_columns: int) -> int:
    if target is None:
        return n_columns - 1
    if header is not None and target in header:
        return header.index(target)
    try:
        position = int(target)
    except ValueError:
        columns = ", ".join(header) if header is not None else f"positions 0..{n_columns - 1} (the file has no header)"
        raise DataError(spec, f"{path} has no column {target!r}", f"Pass --target as one of: {columns}.", path=str(path)) from None
    if not -n_columns <= position < n_columns:
        raise DataError(spec, f"{path} has {n_columns} columns, so --target {position} is out of range", f"Pass a position from 0 to {n_columns - 1}.", path=str(path))
    return position % n_columns


def _parse_targets(texts: list[str]) -> np.ndarray:
    """Integers when every value is one, else floats when every value is one, else strings."""
    try:
        return np.array([int(text) for text in texts], dtype=np.int64)
    except ValueError:
        pass
    try:
        return np.array([float(text) for text in texts], dtype=np.float64)
    except ValueError:
        return np.array(texts, dtype=str)


def load_csv(spec: str, path: Path, target: str | None = None) -> RawDataset:
    """Read features and targets from `path`; see the module docstring for the layout."""
    if not path.is_file():
        raise DataError(spec, f"{path} is not a file", "Pass a CSV file, e.g. csv:data/table.csv.", path=str(path))
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            rows = [(reader.line_num, [field.strip() for field in row]) for row in reader if row]
    except (UnicodeDecodeError, csv.Error) as error:
        raise DataError(spec, f"{path} is not a readable UTF-8 CSV file ({error})", "Save the table as UTF-8 CSV with comma separators.", path=str(path)) from error

    header = None
    if rows and not all(_is_number(field) for field in rows[0][1]):
        header = rows.pop(0)[1]
    if not rows:
        raise DataError(spec, f"{path} has no data lines", "Add one line per example.", path=str(path))

    n_columns = len(header) if header is not None else len(rows[0][1])
    if n_columns < 2:
        raise DataError(spec, f"{path} has {n_columns} column(s)", "Give at least one feature column and one target column.", path=str(path))
    for line, fields in rows:
        if len(fields) != n_columns:
            raise DataError(spec, f"line {line} of {path} has {len(fields)} fields, expected {n_columns}", "Give every line the same number of fields.", path=str(path), index=line)

    target_column = _target_column(spec, path, target, header, n_columns)
    feature_columns = [column for column in range(n_columns) if column != target_column]
    features = np.empty((len(rows), len(feature_columns)), dtype=np.float64)
    target_texts = []
    for row, (line, fields) in enumerate(rows):
        for position, column in enumerate(feature_columns):
            try:
                features[row, position] = float(fields[column])
            except ValueError:
                name = header[column] if header is not None else f"column {column}"
                raise DataError(
                    spec, f"line {line} of {path}, feature {name!r}: {fields[column]!r} is not a number",
                    "Make every feature column numeric, or pick that column with --target.", path=str(path), index=line,
                ) from None
        if fields[target_column] == "":
            raise DataError(spec, f"line {line} of {path} has an empty target", "Fill in the target or drop the line.", path=str(path), index=line)
        target_texts.append(fields[target_column])

    line_numbers = [line for line, _ in rows]
    return RawDataset(
        x=features, y=_parse_targets(target_texts), task=None, origin=str(path),
        locate=lambda split, index: f"line {line_numbers[index]} of {path}",
    )
