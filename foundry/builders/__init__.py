"""Engine builders behind one interface: `reference` (PyTorch, runs anywhere) and `trtllm`.

The package holds the backend → builder mapping, so base.py (the interface and the loader) never
imports the builders that import it.
"""

from foundry.builders.base import EngineBuilder, load_engine, read_engine_info
from foundry.builders.reference import ReferenceBuilder
from foundry.builders.trtllm import TrtllmBuilder
from foundry.errors import FoundryError

BUILDERS: dict[str, type] = {"reference": ReferenceBuilder, "trtllm": TrtllmBuilder}


def get_builder(backend: str) -> EngineBuilder:
    if backend not in BUILDERS:
        raise FoundryError(f"build.backend: unknown builder {backend!r}; choose one of {', '.join(BUILDERS)}")
    return BUILDERS[backend]()


__all__ = ["BUILDERS", "EngineBuilder", "get_builder", "load_engine", "read_engine_info"]
