"""Kubeflow Pipelines wiring: components (one per stage), the pipeline, compile/run-local/submit.

`kfp_io` is imported inside the component bodies in the image; the other modules import kfp.
"""
