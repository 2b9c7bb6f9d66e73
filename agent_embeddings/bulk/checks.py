"""What a bulk job refuses before it writes anything: bad arguments, an output inside its input,
ids that are not unique (within the input, or shared with another input of the output)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._deps import require
from ..errors import BulkOutputError, CorpusError, InvalidInputError

__all__ = ["check_arguments", "check_not_inside", "refuse_duplicate_ids", "refuse_shared_ids"]

_SHOWN = 5


def check_arguments(**values: Any) -> None:
    """The Python API's arguments, checked as the CLI's parser checks its flags."""
    if values["engine"] not in ("local", "ray"):
        raise InvalidInputError(f"unknown engine {values['engine']!r}; use 'local' or 'ray'")
    for key in ("shard_rows", "concurrency", "workers"):
        value = values[key]
        if (value is not None or key != "workers") and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise InvalidInputError(f"{key} must be a positive integer, got {value!r}")
    gpus = values["gpus_per_worker"]
    if gpus is not None and (isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or not 0 <= gpus < 1e6):
        raise InvalidInputError(f"gpus_per_worker must be a number >= 0, got {gpus!r}")
    for key in ("text_column", "id_column"):
        value = values[key]
        if (value is not None or key == "text_column") and (not isinstance(value, str) or not value):
            raise InvalidInputError(f"{key} must be a column name, got {value!r}")
    keep = values["keep_columns"]
    if isinstance(keep, str) or not all(isinstance(c, str) and c for c in keep):
        raise InvalidInputError(f"keep_columns must be a list of column names, got {keep!r}")
    for key in ("skip_invalid", "overwrite", "append"):
        if not isinstance(values[key], bool):
            raise InvalidInputError(f"{key} must be True or False, got {values[key]!r}")


def check_not_inside(output: Path, source: Path) -> None:
    """An output in (or equal to) its own input would be read back as input on the next run."""
    out, inp = output.absolute(), source.resolve()
    resolved = output.resolve()
    if inp in (out, resolved) or (inp.is_dir() and (inp in out.parents or inp in resolved.parents)):
        raise BulkOutputError(
            f"{output}: the output is inside the input {source} (a rerun would read its own shards as input); "
            "give --output a directory outside the input"
        )


def _listed(values: list[Any]) -> str:
    more = f" and {len(values) - _SHOWN} more" if len(values) > _SHOWN else ""
    return ", ".join(repr(v) for v in values[:_SHOWN] if v is not None) + more or "null"


def refuse_duplicate_ids(path: Path, column: str | None, ids: Any) -> None:
    """Ids name rows: two rows with one id make an output that no reader can key by id."""
    if column is None:
        return
    pc = require("pyarrow.compute", "bulk")
    counts = pc.value_counts(ids)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(repeated):
        raise CorpusError(
            f"{path}: id column {column!r} has duplicate ids: {_listed(repeated.field('values').to_pylist())}; "
            "ids must be unique"
        )


def refuse_shared_ids(path: Path, ids: Any, others: Any, where: str) -> None:
    """Two inputs of one output may not share an id: a reader keys the output by id."""
    pc = require("pyarrow.compute", "bulk")
    if not len(others) or not len(ids):
        return
    if others.type != ids.type:
        raise CorpusError(f"{path}: its ids are {ids.type} but those of the other inputs in {where} are "
                          f"{others.type}; one output has one id type")
    shared = ids.filter(pc.is_in(ids, value_set=others))
    if len(shared):
        raise CorpusError(f"{path}: ids already in {where} from another input: {_listed(shared.to_pylist())}; "
                          "ids must be unique across the inputs of one output")
