"""Cold-start SFT (docs/design.md §8.8): assistant-turn token cross-entropy, with the RL step's
optimizer, shardings, micro-batching and non-finite guard."""
