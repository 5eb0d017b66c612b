"""Engine adapters: the only modules that import vllm, torch or transformers (lazily)."""

from llmrelease.engines.base import Engine, Generation, GenerationBatch

__all__ = ["Engine", "Generation", "GenerationBatch"]
