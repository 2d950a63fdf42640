"""vcoach_jax: VisionCoach grounded video reasoning RL in JAX / Flax NNX.

Subpackages are imported on demand so that `import vcoach_jax.rewards` does not pull in the model.
"""

__version__ = "0.1.0"
