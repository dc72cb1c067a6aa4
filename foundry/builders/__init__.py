"""Engine builders behind one interface: `reference` (PyTorch, runs anywhere) and `trtllm`."""

from foundry.builders.base import EngineBuilder, get_builder, load_engine

__all__ = ["EngineBuilder", "get_builder", "load_engine"]
