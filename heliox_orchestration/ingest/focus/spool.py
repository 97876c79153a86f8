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

    def append(self, frame: pd.DataFrame, partition: int | None = None) -> None:
        """Append the frame's rows to their partitions (or all of them to ``partition``)."""
        if frame.empty:
            return
        if partition is not None:
            self._write(partition, frame)
            return
        keys = pd.util.hash_array(frame["resource_id"].to_numpy(dtype=object)) % np.uint64(self.partitions)
        for k in np.unique(keys).tolist():
            self._write(int(k), frame[keys == k])

    def _write(self, k: int, frame: pd.DataFrame) -> None:
        if k not in self._writers:
            self._writers[k] = pa.ipc.new_stream(str(self._paths[k]), self.schema)
        batch = pa.RecordBatch.from_pandas(frame[self.schema.names], schema=self.schema, preserve_index=False)
        self._writers[k].write_batch(batch)

    def finish(self) -> None:
        for writer in self._writers.values():
            writer.close()

    def read(self, k: int) -> pd.DataFrame:
        """Partition ``k``: text columns as object (None where missing), like the frames written."""
        if k in self._writers:
            with pa.ipc.open_stream(str(self._paths[k])) as reader:
                table = reader.read_all()
        else:
            table = self.schema.empty_table()
        frame = table.to_pandas()
        for name in self._strings:
            frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
        return frame

    def __iter__(self) -> Iterator[pd.DataFrame]:
        for k in range(self.partitions):
            if k in self._writers:
                yield self.read(k)


def spool_directory() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="heliox-import-")
