"""What runs on a Ray worker: the trial runner, the workload registry, built-in workloads."""
