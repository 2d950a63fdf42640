"""VisionCoach RL: group advantages, GSPO + KL, coaching (hard prompts, positives), NLL
self-distillation, and the sharded jitted train step (docs/design.md §8.3, §8.4, §8.7)."""
