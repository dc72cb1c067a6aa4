from materializers.directory import ModelDirectoryMaterializer

__all__ = ["ModelDirectoryMaterializer"]
