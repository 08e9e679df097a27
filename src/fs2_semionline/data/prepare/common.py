"""Reading input tables, counting what is kept and dropped, writing outputs; asset cards.

Inputs are the datasets' own files: parquet (as shipped on the Hugging Face Hub) or JSON
Lines (``.jsonl``/``.json``/``.ndjson``, e.g. ``datasets``' ``to_json``); a folder stands for
every such file below it; a folder written by ``datasets``' ``save_to_disk`` and a dataset
name as the Hub spells it (``HuggingFaceH4/MATH-500``, ``NAME:SPLIT`` for one split) are
read with the ``datasets`` library (a name is loaded by ``datasets.load_dataset``, which
caches it, so a machine that reaches the Hub once, or a cache copied to it, serves it). The outputs are the project's JSONL files (math:
``{"prompt", "answer", "source", ...}``, chat: ``{"prompt", ...}``) plus ``stats.json``.

Error policy (as in :mod:`fs2_semionline.data.jsonl`): a file whose layout is wrong (a
required column is missing, a line is not a JSON object) is an error naming the file
and the column / line; a row that is well-formed but unusable (a null problem, a
conversation that is not a list, ...) is a counted drop (``bad_row``), and the first
:data:`MAX_BAD_ROWS_LISTED` of them are named in ``stats.json``.

:func:`resolve_dataset_dir` finds a prepared folder through its fairseq2 dataset card.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from fs2_semionline.core.errors import ConfigError, UserInputError
from fs2_semionline.data.jsonl import LoadReport, iter_jsonl

if TYPE_CHECKING:
    import pyarrow.parquet as pq
    from fairseq2.assets import AssetStore

T = TypeVar("T")

#: How many bad rows ``stats.json`` names (all of them are counted).
MAX_BAD_ROWS_LISTED = 100

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
#: What a folder given as input stands for: not ``.json``, which in a Hub snapshot or a
#: ``save_to_disk`` folder is metadata (dataset_info.json, state.json), not rows.
FOLDER_SUFFIXES = (".parquet", ".jsonl", ".ndjson")


#: A dataset as the Hub names it, ``owner/name``, with an optional ``:split``.
_DATASET_NAME = re.compile(r"(?P<name>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?::(?P<split>[\w.-]+))?")


@dataclass(frozen=True)
class DatasetSplit:
    """One split of a ``datasets`` dataset (a Hub name or a ``save_to_disk`` folder);
    ``label`` names it in messages and ``stats.json`` (``HuggingFaceH4/MATH-500:test``)."""

    label: str
    dataset: Any  # datasets.Dataset

    def __str__(self) -> str:
        return self.label


#: What one input stands for after :func:`expand_inputs`: a file or a dataset split.
InputSource: TypeAlias = "Path | DatasetSplit"


class MissingColumnError(UserInputError):
    """An input file lacks a column its dataset layout requires."""

    def __init__(self, path: Path | DatasetSplit, column: str, columns: Iterable[str]) -> None:
        present = ", ".join(sorted(columns)) or "none"
        super().__init__(f"{path}: missing column '{column}' (columns present: {present})")
        self.path = path
        self.column = column


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class SourceRow:
    """One input row and where it came from ("file:LINE" or "file:row N")."""

    data: Mapping[str, object]
    where: str


class _BadRow(Exception):
    """Raised inside a row handler; the caller counts the row as ``bad_row``."""


class InputTable:
    """A parquet or JSON Lines file, or a dataset split: its column names and its rows
    as dicts.

    Parquet is read with pyarrow, in batches and only the columns asked for (WildChat's
    moderation columns are large); JSON Lines with the project's reader, whose columns
    are the keys of the first record; a dataset split through ``datasets``, in batches
    of the columns asked for.
    """

    def __init__(self, path: Path | DatasetSplit) -> None:
        self.path = path
        if isinstance(path, DatasetSplit):
            self.kind = "dataset"
            self.columns = frozenset(path.dataset.column_names)
            return
        suffix = path.suffix.lower()
        if suffix in PARQUET_SUFFIXES:
            self.kind = "parquet"
            self.columns = frozenset(self._parquet_file().schema_arrow.names)
        elif suffix in JSONL_SUFFIXES:
            self.kind = "jsonl"
            records = iter_jsonl(path)
            first = next(records, None)
            records.close()  # type: ignore[attr-defined]  # a generator: closes its file
            self.columns = frozenset(first.data) if first is not None else frozenset()
        else:
            raise UserInputError(
                f"{path}: unsupported file type (expected {', '.join(PARQUET_SUFFIXES + JSONL_SUFFIXES)})"
            )

    def _parquet_file(self) -> pq.ParquetFile:
        # Imported here: JSONL-only use and `import fs2_semionline.data.prepare` stay light.
        import pyarrow as pa
        import pyarrow.parquet as pq

        assert isinstance(self.path, Path)
        try:
            return pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as ex:
            raise UserInputError(f"{self.path}: not a readable parquet file ({ex})") from None

    def require(self, *names: str) -> None:
        for name in names:
            if name not in self.columns:
                raise MissingColumnError(self.path, name, self.columns)

    def rows(self, columns: Sequence[str]) -> Iterator[SourceRow]:
        """Rows restricted to ``columns`` (those the file has)."""
        wanted = [c for c in columns if c in self.columns]
        if isinstance(self.path, DatasetSplit):
            row_nr = 0
            for batch in self.path.dataset.select_columns(wanted).iter(batch_size=8192):
                for i in range(len(batch[wanted[0]]) if wanted else 0):
                    row_nr += 1
                    yield SourceRow({c: batch[c][i] for c in wanted}, f"{self.path}:row {row_nr}")
            return
        if self.kind == "jsonl":
            for record in iter_jsonl(self.path):
                data = {c: record.data[c] for c in wanted if c in record.data}
                yield SourceRow(data, f"{self.path}:{record.line_nr}")
            return
        row_nr = 0
        for batch in self._parquet_file().iter_batches(batch_size=8192, columns=wanted):
            for data in batch.to_pylist():
                row_nr += 1
                yield SourceRow(data, f"{self.path}:row {row_nr}")


def expand_inputs(inputs: Sequence[Path | str]) -> list[InputSource]:
    """Files in the order given; a folder stands for its parquet/JSONL files, sorted
    (hidden ones, such as a Hub snapshot's .cache, left out), or, written by
    ``save_to_disk``, for its splits; a name that is no file or folder here
    (``owner/name[:split]``) is loaded with ``datasets.load_dataset``."""
    sources: list[InputSource] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir() and _saved_by_datasets(path):
            sources.extend(_splits(str(path), _datasets().load_from_disk(str(path))))
        elif path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in FOLDER_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                raise UserInputError(f"{path}: folder holds no parquet or JSONL file (nor a datasets save_to_disk)")
            sources.extend(found)
        elif path.is_file():
            sources.append(path)
        elif (match := dataset_name(str(item))) is not None:
            sources.extend(_load_by_name(*match))
        else:
            raise UserInputError(f"{path}: no such file or folder (nor a dataset name such as owner/name[:split])")
    if not sources:
        raise UserInputError("no input files given")
    return sources


def dataset_name(text: str) -> tuple[str, str | None] | None:
    """(name, split) when ``text`` reads as a Hub dataset name (``owner/name[:split]``)
    and not as a file name (``data/train.jsonl`` is a missing file, not a dataset)."""
    match = _DATASET_NAME.fullmatch(text)
    if match is None or Path(match["name"]).suffix.lower() in JSONL_SUFFIXES + PARQUET_SUFFIXES:
        return None
    return match["name"], match["split"]


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as ex:  # a dependency of the package: only a broken install lacks it
        raise UserInputError(f"reading a dataset by name needs the `datasets` library ({ex})") from None
    return datasets


def _saved_by_datasets(path: Path) -> bool:
    """A ``save_to_disk`` folder: a DatasetDict's index, or a Dataset's state."""
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _load_by_name(name: str, split: str | None) -> list[DatasetSplit]:
    datasets = _datasets()
    try:
        loaded = datasets.load_dataset(name, split=split)
    except Exception as ex:  # noqa: BLE001 - the library's own message says why
        reason = (str(ex).strip().splitlines() or [""])[0][:300]
        raise UserInputError(
            f"{name}: no such file or folder here, and datasets.load_dataset({name!r}) failed: "
            f"{type(ex).__name__}: {reason} (a name needs the Hub, or a datasets cache that holds it; "
            "HF_DATASETS_OFFLINE=1 reads the cache only)"
        ) from None
    return _splits(name, loaded, split)


def _splits(label: str, loaded: Any, split: str | None = None) -> list[DatasetSplit]:
    """Each split of a Dataset / DatasetDict, in the order the dataset lists them."""
    if hasattr(loaded, "keys"):  # a DatasetDict
        return [DatasetSplit(f"{label}:{name}", loaded[name]) for name in loaded.keys()]
    return [DatasetSplit(f"{label}:{split}" if split else label, loaded)]


def _text(row: SourceRow, name: str, *, allow_number: bool = False) -> str:
    """The string in column ``name``; anything else makes the row a bad row."""
    if name not in row.data:
        raise _BadRow(f"field '{name}': missing")
    value = row.data[name]
    if isinstance(value, str):
        return unicode_text(value, name)
    if allow_number and isinstance(value, (int, float)) and not isinstance(value, bool):
        return number_text(value)
    got = "null" if value is None else type(value).__name__
    raise _BadRow(f"field '{name}': expected a string, got {got}")


def unicode_text(value: str, name: str) -> str:
    """``value``, or a bad row when it holds a lone surrogate (not writable as UTF-8)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise _BadRow(f"field '{name}': not valid Unicode text (a lone surrogate at character {err.start})") from None
    return value


def _optional_text(row: SourceRow, name: str) -> str:
    value = row.data.get(name)
    return unicode_text(value, name) if isinstance(value, str) else ""


def number_text(value: int | float | str) -> str:
    """An answer as text, integral floats without ".0" (AMC answers ship as ``27.0``)."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, int):
        return str(value)
    text = value.strip()
    match = re.fullmatch(r"([+-]?\d+)\.0*", text)
    return match.group(1) if match else text


def _dedup_key(text: str) -> str:
    """Problems that differ only in whitespace are the same problem."""
    return " ".join(text.split())


# --------------------------------------------------------------------------- stats / output


def parsed_rows(
    table: InputTable, columns: Sequence[str], parse: Callable[[SourceRow], T], stats: PrepareStats
) -> Iterator[tuple[SourceRow, T]]:
    """Every row of ``table`` (counted as read) with what ``parse`` reads of it; a row
    ``parse`` refuses is a counted, listed bad row and is passed over."""
    for row in table.rows(columns):
        stats.report.num_read += 1
        try:
            parsed = parse(row)
        except _BadRow as ex:
            stats.bad_row(row, str(ex))
            continue
        yield row, parsed


class UniqueRecords:
    """Records in first-seen order; a later one with the same prompt (up to white space)
    is a counted ``duplicate`` drop, so that no problem lands in two splits."""

    def __init__(self, stats: PrepareStats) -> None:
        self.records: list[dict[str, object]] = []
        self._seen: set[str] = set()
        self._stats = stats

    def add(self, record: dict[str, object]) -> bool:
        key = _dedup_key(str(record["prompt"]))
        if key in self._seen:
            self._stats.drop("duplicate")
            return False
        self._seen.add(key)
        self.records.append(record)
        return True


@dataclass
class PrepareStats:
    """What ``stats.json`` records: counts read, kept and dropped per reason."""

    dataset: str
    inputs: list[str]
    options: dict[str, object] = field(default_factory=dict)
    report: LoadReport = field(default_factory=LoadReport)
    bad_rows: list[str] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def dropped(self) -> Counter[str]:
        return self.report.skipped

    @property
    def num_kept(self) -> int:
        return self.report.num_read - self.report.num_skipped

    def drop(self, reason: str) -> None:
        self.report.skipped[reason] += 1

    def bad_row(self, row: SourceRow, message: str) -> None:
        self.drop("bad_row")
        if len(self.bad_rows) < MAX_BAD_ROWS_LISTED:
            self.bad_rows.append(f"{row.where}: {message}")

    def as_dict(self) -> dict[str, object]:
        return {
            "dataset": self.dataset,
            "inputs": self.inputs,
            "options": self.options,
            "num_read": self.report.num_read,
            "num_kept": self.num_kept,
            "num_dropped": self.report.num_skipped,
            "dropped": dict(sorted(self.dropped.items())),
            "bad_rows": self.bad_rows,
            "splits": self.splits,
            **self.extra,
        }

    def summary(self) -> str:
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items())) or "none"
        splits = ", ".join(f"{k} {v}" for k, v in self.splits.items())
        return f"{self.dataset}: read {self.report.num_read}, kept {self.num_kept} ({splits}); dropped: {dropped}"


def _write_jsonl(path: Path, records: Iterable[Mapping[str, object]]) -> int:
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    return n


def _write_outputs(out: Path, splits: Mapping[str, Sequence[Mapping[str, object]]], stats: PrepareStats) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for split, records in splits.items():
        stats.splits[split] = _write_jsonl(out / f"{split}.jsonl", records)
    (out / "stats.json").write_text(json.dumps(stats.as_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _held_out_split(
    records: list[dict[str, object]], sizes: Mapping[str, int], seed: int, rest: str = "train"
) -> dict[str, list[dict[str, object]]]:
    """Seeded shuffle, then the first ``sizes[s]`` records go to split ``s`` in order."""
    need = sum(sizes.values())
    if need >= len(records):
        wanted = " + ".join(f"{n} {s}" for s, n in sizes.items())
        raise UserInputError(
            f"only {len(records)} records remain after filtering: too few for {wanted} and a non-empty {rest} split"
        )
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    out: dict[str, list[dict[str, object]]] = {}
    start = 0
    for split, n in sizes.items():
        out[split] = shuffled[start : start + n]
        start += n
    out[rest] = shuffled[start:]
    return out


# --------------------------------------------------------------------------- asset cards


def resolve_dataset_dir(name: str, *, store: AssetStore | None = None) -> Path:
    """The prepared folder of dataset card ``name`` (``data_path``, set by a user override).

    ``store`` defaults to fairseq2's asset store (which initialises fairseq2).
    """
    if store is None:
        from fairseq2.assets import get_asset_store

        store = get_asset_store()
    card = store.maybe_retrieve_card(name)
    if card is None:
        raise ConfigError(
            f"no fairseq2 asset card named {name!r} (dataset cards: numinamath, wildchat, math500, amc23)"
        )
    data_path = card.maybe_get_field("data_path")
    if data_path is None or data_path.value is None:
        command = card.maybe_get_field("prepare_command")
        how = f" Prepare it with `{command.as_(str)}`, then set" if command is not None and command.value else " Set"
        raise ConfigError(
            f"asset card {card.name!r}: field 'data_path' is not set.{how} the prepared folder with a user card "
            "override: a YAML file in ~/.config/fairseq2/assets (or in $FAIRSEQ2_USER_ASSET_DIR) with "
            f"'name: {card.name}@user' and 'data_path: /path/to/prepared/folder'"
        )
    path = Path(data_path.as_(str)).expanduser()
    base_path = card.metadata.get("__base_path__")
    if not path.is_absolute() and isinstance(base_path, Path):
        path = base_path / path
    if not path.is_dir():
        raise ConfigError(f"asset card {card.name!r}: field 'data_path': {path} is not a folder")
    return path
