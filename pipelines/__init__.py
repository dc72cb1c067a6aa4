from pipelines.engine_pipeline import engine_pipeline

__all__ = ["engine_pipeline"]
