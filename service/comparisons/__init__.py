"""Comparisons: several optimizers tuned side by side on one workload, their best
configurations re-trained on fresh seeds, and a report that says whether the difference is
beyond noise. Built on ordinary studies; the scheduler knows nothing of comparisons."""
