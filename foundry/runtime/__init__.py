"""Runtimes that execute a model: the reference engine runtime and the HF transformers baseline."""
