"""First-party tools behind scripts/: the local stack, model export, training, evaluation."""
