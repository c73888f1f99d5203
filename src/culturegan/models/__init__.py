"""Neural networks and losses for unpaired image-to-image translation (CycleGAN, CUT)."""
