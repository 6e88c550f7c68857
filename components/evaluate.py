"""Component: score profiles by leave-one-out kNN on a label column."""

from kfp.dsl import Dataset, Input, Metrics, Output


def evaluate(sphered: Input[Dataset], label_column: str, scores: Output[Dataset], metrics: Output[Metrics]) -> dict:
    """kNN accuracy with a 95 % bootstrap interval and the majority-class share for context."""
    from services.steps import evaluate_profiles_step

    result = evaluate_profiles_step(sphered.path, scores.path, label_column=label_column)
    metrics.log_metric("knn_accuracy", result["knn_accuracy"])
    metrics.log_metric("majority_share", result["majority_share"])
    return result
