"""MLflow tracking: URI and experiment setup, a parent run per pipeline, a nested run per pair.

- `store`: the tracking URI and experiment (`configure`), the client, redaction of credentials.
- `tracker`: `MlflowTracker`, the trainer's tracker, logging to one run by id; `flatten_params`.
- `parent_run`: the parent run of one pipeline execution, shared by its stage processes (DVC)
  or handed from step to step (KFP), and `finish_run`.
- `pair_run`: a training run per culture pair, nested under the parent, with system metrics.

mlflow is imported inside the functions that use it: it costs about a second to import.
"""
