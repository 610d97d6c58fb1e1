"""Rollout engines (DESIGN §7): token ids in, token ids + log-probs + stop reason out."""

from longrl.rollout.base import RolloutEngine

__all__ = ["RolloutEngine"]
