"""dreamsuite: Deep Dreams, Guided Dreams and their replicas, as a library and a gRPC suite."""

__version__ = "0.1.0"

__all__ = ["__version__"]
