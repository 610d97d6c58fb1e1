"""Training: policy log-probs, SFT warm-up, the RL trainer, checkpoints."""
