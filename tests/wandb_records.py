"""Reads a W&B offline run file (``run-<id>.wandb``) back into its protobuf records.

The file is W&B's transaction log: a 7-byte header (``:W&B``, magic ``0xBEE1``, version 0),
then LevelDB's log format (32 KiB blocks; each chunk has a 7-byte header: CRC32C, length,
type FULL/FIRST/MIDDLE/LAST) whose payloads are ``wandb.proto.wandb_internal_pb2.Record``
messages. Written by hand because the Python SDK no longer ships a reader (its
``sdk.internal.datastore`` moved into the Go ``wandb-core``); the protobuf classes it
still ships decode each record.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

HEADER = struct.Struct("<4sHB")
CHUNK = struct.Struct("<IHB")
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: str | Path) -> list[wandb_internal_pb2.Record]:
    """Every record of a ``.wandb`` file, in order."""
    data = Path(path).read_bytes()
    ident, magic, version = HEADER.unpack_from(data, 0)
    if (ident, magic, version) != (b":W&B", 0xBEE1, 0):
        raise ValueError(f"{path}: not a W&B transaction log (header {ident!r}, {magic:#x})")
    records, pending, pos = [], b"", HEADER.size
    while pos + CHUNK.size <= len(data):
        if BLOCK - pos % BLOCK < CHUNK.size:  # a block's tail too short for a header: padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = CHUNK.unpack_from(data, pos)
        pos += CHUNK.size
        payload, pos = data[pos : pos + length], pos + length
        if kind == 0 and length == 0:  # zero fill at the end of a block
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0
            continue
        pending = payload if kind in (FULL, FIRST) else pending + payload
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


@dataclass
class OfflineRun:
    """What an offline run logged, decoded from its records."""

    run_id: str = ""
    group: str = ""
    job_type: str = ""
    project: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, str] = field(default_factory=dict)  # name or glob -> its step metric
    artifacts: list[wandb_internal_pb2.ArtifactRecord] = field(default_factory=list)
    exit_code: int | None = None


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def _value(item: Any) -> Any:
    return json.loads(item.value_json)


def read_offline_run(path: str | Path) -> OfflineRun:
    """Decode a ``run-<id>.wandb`` file: run attributes, config, history rows, summary,
    ``define_metric`` step metrics, artifacts and the exit code."""
    run = OfflineRun()
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id, run.group = record.run.run_id, record.run.run_group
            run.job_type, run.project = record.run.job_type, record.run.project
            for item in record.run.config.update:
                run.config[_key(item)] = _value(item)
        elif kind == "config":
            for item in record.config.update:
                run.config[_key(item)] = _value(item)
        elif kind == "history":
            run.history.append({_key(item): _value(item) for item in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                run.summary[_key(item)] = _value(item)
        elif kind == "metric":
            metric = record.metric
            run.metrics[metric.name or metric.glob_name] = metric.step_metric
        elif kind == "artifact":
            run.artifacts.append(record.artifact)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run
