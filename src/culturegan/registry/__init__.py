"""Model registry: the promotion gate (gate), generators as MLflow pyfunc models registered and
promoted by alias (mlflow_models), and stylising images with them (inference)."""
