"""Built-in workloads, registered on import: ``digits-cnn``, ``mnist1d-cnn`` and ``synthetic``."""

from workers.builtin import digits_cnn, mnist1d_cnn, synthetic

__all__ = ["digits_cnn", "mnist1d_cnn", "synthetic"]
