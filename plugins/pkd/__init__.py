"""Progressive distillation (Mamba-PKD, 2025): a teacher, then a chain of ever smaller students, each
trained on what its predecessors still get wrong (B-DISTIL-style additive boosting by default),
combined into ensembles and an anytime cascade, with FLOPs accounted per sample."""
