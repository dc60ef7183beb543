"""Training: teacher-forced targets, Mask2Former losses, the loop and its checkpoints."""
