"""Experiment configs (ml_collections). Installed as `vcoach_jax.configs`."""
