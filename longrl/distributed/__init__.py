"""Scale-out: Ray placement of trainer, rollout and reward workers, and weight sync between them."""
