"""A temporary spool on disk that keeps the import's memory bounded by a batch, not by the file.

Charges of one resource-hour can be anywhere in an export, so summing them needs the whole file.
Instead of holding every resource-hour in memory, each chunk's hourly parts go to one of
``partitions`` Arrow IPC files on disk, chosen by a hash of the resource id: every part of a
resource-hour (and every hour of a correction, which is one resource's) lands in the same
partition, so a partition is summed, netted and checked on its own. The partition count follows
the file's size (``SPOOL_BYTES_PER_PARTITION``), so one partition holds about as many
resource-hours whatever the size of the file. The validated, final rows go to a second spool,
which the write streams to the database a partition at a time: the database is opened only
after the whole file validated. The files live in a temporary folder removed by ``close``.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# About this much CSV (or a tenth of it of compressed Parquet) per partition.
SPOOL_BYTES_PER_PARTITION = 32 << 20
PARQUET_COMPRESSION_GUESS = 10
MAX_PARTITIONS = 1024


def partition_count(path: Path, parquet: bool) -> int:
    size = path.stat().st_size * (PARQUET_COMPRESSION_GUESS if parquet else 1)
    return max(1, min(MAX_PARTITIONS, math.ceil(size / SPOOL_BYTES_PER_PARTITION)))


class Spool:
    """Frames of one ``schema`` appended by partition (a hash of ``resource_id``) and read back
    a partition at a time, in the order they were appended."""

    def __init__(self, directory: Path, name: str, schema: pa.Schema, partitions: int) -> None:
        self.schema, self.partitions = schema, partitions
        self._paths = [directory / f"{name}-{k}.arrow" for k in range(partitions)]
        self._writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
        self._strings = [f.name for f in schema if pa.types.is_string(f.type)]

    def append(self, rows: pd.DataFrame | pa.Table, partition: int | None = None) -> None:
        """Append the rows to their partitions (or all of them to ``partition``)."""
        if not len(rows):
            return
        table = (
            rows.select(self.schema.names).cast(self.schema)
            if isinstance(rows, pa.Table)
            else pa.Table.from_pandas(rows[self.schema.names], schema=self.schema, preserve_index=False)
        )
        if partition is not None:
            self._write(partition, table)
            return
        # Hash each distinct resource id once; the rows follow by their codes.
        encoded = pc.dictionary_encode(table.column("resource_id")).combine_chunks()
        uniques = encoded.dictionary.to_numpy(zero_copy_only=False)
        hashed = pd.util.hash_array(uniques) % np.uint64(self.partitions)
        keys = hashed.astype(np.int64)[encoded.indices.to_numpy(zero_copy_only=False)]
        order = np.argsort(keys, kind="stable")
        ordered = table.take(pa.array(order))
        bounds = np.searchsorted(keys[order], np.arange(self.partitions + 1))
        for k in range(self.partitions):
            if bounds[k + 1] > bounds[k]:
                self._write(k, ordered.slice(bounds[k], bounds[k + 1] - bounds[k]))

    def _write(self, k: int, table: pa.Table) -> None:
        if k not in self._writers:
            self._writers[k] = pa.ipc.new_stream(str(self._paths[k]), self.schema)
        self._writers[k].write_table(table)

    def finish(self) -> None:
        for writer in self._writers.values():
            writer.close()

    def read_arrow(self, k: int) -> pa.Table:
        """Partition ``k`` as written."""
        if k not in self._writers:
            return self.schema.empty_table()
        with pa.ipc.open_stream(str(self._paths[k])) as reader:
            return reader.read_all()

    def read(self, k: int) -> pd.DataFrame:
        """Partition ``k``: text columns as object (None where missing), like the frames written."""
        return self.frame(self.read_arrow(k))

    @staticmethod
    def frame(table: pa.Table) -> pd.DataFrame:
        """Rows as a frame: text columns as object (None where missing)."""
        frame = table.to_pandas()
        for field in table.schema:
            if pa.types.is_string(field.type):
                frame[field.name] = frame[field.name].astype(object).where(frame[field.name].notna(), None)
        return frame

    def __iter__(self) -> Iterator[pd.DataFrame]:
        for k in range(self.partitions):
            if k in self._writers:
                yield self.read(k)


def spool_directory() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="heliox-import-")
