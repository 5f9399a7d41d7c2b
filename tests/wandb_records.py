"""Read back an offline W&B run: the records of its ``.wandb`` transaction log.

The log is W&B's LevelDB-style record log: a 7-byte header (``:W&B``, magic, version), then
32 KiB blocks of chunks, each with a 7-byte header (crc32c, length, type: 1 full, 2 first,
3 middle, 4 last) holding serialized ``wandb_internal_pb2.Record`` messages.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32768


def read_records(path: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, chunks = 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
        payload = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0:
            continue
        if kind in (1, 2):
            chunks = payload
        else:
            chunks += payload
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(chunks)
            yield record


def history(path: Path) -> list[dict]:
    """Every logged row (``run.log``) as a dict of decoded values."""
    rows = []
    for r in read_records(path):
        if r.WhichOneof("record_type") == "history":
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item})
    return rows


def run_record(path: Path):
    for r in read_records(path):
        if r.WhichOneof("record_type") == "run":
            return r.run
    return None


def wait_for_exit(path: Path, timeout: float = 20.0) -> None:
    """The W&B service may still be flushing the log when ``wandb.finish()`` returns."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            if any(r.WhichOneof("record_type") == "exit" for r in read_records(path)):
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} has no exit record after {timeout}s")
        time.sleep(0.2)


HIDDEN = ("_step", "_runtime", "_timestamp")


def logged_keys(path: Path) -> set[str]:
    """The metric keys of the run's history as W&B's dashboard lists them: a table, an image or a
    custom chart logged under one key is one key (its fields are nested under it)."""
    keys = set()
    for r in read_records(path):
        if r.WhichOneof("record_type") == "history":
            for i in r.history.item:
                key = i.key or i.nested_key[0]
                if key not in HIDDEN:
                    keys.add(key)
    return keys


def metric_axes(path: Path) -> dict[str, str]:
    """``define_metric`` records: glob or name -> its step metric."""
    out = {}
    for r in read_records(path):
        if r.WhichOneof("record_type") == "metric":
            out[r.metric.glob_name or r.metric.name] = r.metric.step_metric
    return out


def artifacts(path: Path) -> list:
    """The artifacts the run logged (tables W&B stores as run artifacts included)."""
    return [r.artifact for r in read_records(path) if r.WhichOneof("record_type") == "artifact"]


def table(run_dir: Path, row: dict, key: str) -> list[dict]:
    """The table logged as ``key`` in history row ``row``, as a list of dicts."""
    data = json.loads((Path(run_dir) / "files" / row[f"{key}/path"]).read_text())
    return [dict(zip(data["columns"], r)) for r in data["data"]]
