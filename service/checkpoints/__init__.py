"""Trial checkpoints on the service's side: resuming re-runs, retention, downloads.

The store itself (``workers.checkpoints``) is shared with the workers, which write to it;
this package holds what only the service does with it.
"""
