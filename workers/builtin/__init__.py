"""Built-in workloads, registered on import: ``digits-cnn`` and ``synthetic``."""

from workers.builtin import digits_cnn, synthetic

__all__ = ["digits_cnn", "synthetic"]
