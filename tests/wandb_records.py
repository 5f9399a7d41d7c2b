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
