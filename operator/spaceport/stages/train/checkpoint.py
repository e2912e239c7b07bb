"""Checkpoints in the output store, written so that a crash at any moment leaves a usable one.

Two slots alternate (``checkpoints/slot-0.pt`` and ``slot-1.pt``), so storage stays bounded without
deleting anything. Each slot's data is written atomically first, then its manifest
(``slot-N.json``: step, size, sha256). A slot is valid only when its manifest matches its data: a
crash between the two writes leaves a stale manifest whose hash no longer matches, and the other slot
(one interval older) is used instead.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from typing import Any

import torch

from spaceport.api.stages import TRAIN
from spaceport.storage import Store

PREFIX = TRAIN.files.checkpoints
SLOTS = 2
log = logging.getLogger("spaceport.stages.train")


def _keys(slot: int) -> tuple[str, str]:
    return f"{PREFIX}/slot-{slot}.pt", f"{PREFIX}/slot-{slot}.json"


def _manifest(store: Store, slot: int) -> dict[str, Any] | None:
    _, meta_key = _keys(slot)
    try:
        meta = json.loads(store.read_text(meta_key)) if store.exists(meta_key) else None
    except (ValueError, UnicodeDecodeError):
        return None
    return meta if isinstance(meta, dict) and isinstance(meta.get("step"), int) else None


def save(store: Store, state: dict[str, Any], step: int, fingerprint: str) -> str:
    """Write ``state`` into the slot not holding the newest checkpoint; returns the key written."""
    newest = max(range(SLOTS), key=lambda s: (_manifest(store, s) or {}).get("step", -1))
    slot = (newest + 1) % SLOTS if _manifest(store, newest) else 0
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    data_key, meta_key = _keys(slot)
    store.write_bytes(data_key, data)
    meta = {"step": step, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "fingerprint": fingerprint}
    store.write_text(meta_key, json.dumps(meta))
    return data_key


def load_latest(store: Store, fingerprint: str) -> tuple[dict[str, Any], int] | None:
    """The newest checkpoint that is complete, uncorrupted and from the same training setup."""
    candidates = [(m["step"], s, m) for s in range(SLOTS) if (m := _manifest(store, s))]
    for step, slot, meta in sorted(candidates, reverse=True):
        data_key, _ = _keys(slot)
        if meta.get("fingerprint") != fingerprint:
            log.warning("ignoring checkpoint %s: written by a different training setup", data_key)
            continue
        try:
            data = store.read_bytes(data_key)
        except Exception as e:
            log.warning("ignoring checkpoint %s: %s", data_key, e)
            continue
        if len(data) != meta.get("size") or hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            log.warning("ignoring checkpoint %s: incomplete or corrupt", data_key)
            continue
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:
            log.warning("ignoring checkpoint %s: unreadable (%s)", data_key, e)
            continue
        return state, step
    return None
