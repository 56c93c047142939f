"""drivelab: driving-scene and robot perception data toolkit."""

__version__ = "0.1.0"
