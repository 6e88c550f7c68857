"""Component: score the new encoder against a baseline and the untrained network on labelled fields."""

from kfp.dsl import Input, Markdown, Metrics, Model, Output


def evaluate_models(
    model: Input[Model],
    trained: dict,
    fields_dir: str,
    baseline_checkpoint: str,
    limit_per_class: int,
    eval_mode: str,
    eval_untrained: bool,
    metrics: Output[Metrics],
    report: Output[Markdown],
) -> dict:
    """Full-field 1-NN accuracy of candidate, baseline and untrained encoders on the same fields."""
    import os
    import tempfile

    from services.steps import evaluate_models_step

    checkpoint = os.path.join(model.path, trained["checkpoint_name"])
    result = evaluate_models_step(
        checkpoint,
        fields_dir,
        tempfile.mkdtemp(prefix="evaluate-"),
        baseline=baseline_checkpoint,
        limit_per_class=limit_per_class,
        mode=eval_mode,
        untrained=eval_untrained,
    )
    for name, value in result["scores"].items():
        metrics.log_metric(f"{name}_{result['metric']}", value)
    with open(report.path, "w") as fh:
        fh.write(result.pop("markdown"))
    return result
