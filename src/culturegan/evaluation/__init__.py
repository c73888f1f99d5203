"""Evaluation: style classifier, transfer metrics, baselines and the cultural distance between styles."""
