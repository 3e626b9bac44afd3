"""An example of a team's own model, tuned by adamp-tune through its ``team-mlp`` workload."""
