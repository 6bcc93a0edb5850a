"""Loads the PyTorch peer (../shared/peers/torch_peer.py) when PyTorch and the file are there."""

from __future__ import annotations

import importlib.util
import pathlib
from types import ModuleType

PEER = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "peers" / "torch_peer.py"


def load_peer() -> ModuleType | None:
    """The peer module, or None without PyTorch (`pip install -e ".[bench]"`) or without the file."""
    if importlib.util.find_spec("torch") is None or not PEER.is_file():
        return None
    spec = importlib.util.spec_from_file_location("torch_peer", PEER)
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)
    return peer
