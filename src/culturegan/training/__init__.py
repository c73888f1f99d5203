"""GAN training: datasets, objectives, the per-pair training stage, checkpoints and benchmarks."""
