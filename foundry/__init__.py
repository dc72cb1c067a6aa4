"""LLM Engine Foundry domain package: plain Python, no zenml, mlflow only in registry.py."""

__version__ = "0.1.0"
