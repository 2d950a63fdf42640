"""Mesh axis names and the default logical-axis -> mesh-axes rules (no JAX import: configs use it).

Weights: FSDP over the model width, tensor parallelism over heads / mlp / vocab. Activations:
the batch over data x fsdp (then the tokens, patches or segments over what the batch left). A
config replaces the table through `config.parallel.rules`.
"""

MESH_AXES = ("data", "fsdp", "tensor")

DEFAULT_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # Weights.
    ("embed", ("fsdp",)),
    ("vocab", ("tensor",)),
    ("heads", ("tensor",)),
    ("kv_heads", ("tensor",)),
    ("mlp", ("tensor",)),
    ("vit_embed", ("fsdp",)),
    ("vit_heads", ("tensor",)),
    ("vit_mlp", ("tensor",)),
    ("patch", ()),
    ("norm", ()),
    ("lora_rank", ()),
    # Activations (vcoach_jax/parallel/activations.py): rows over the batch axes; the tokens of
    # a row, or the patches and segments of the vision tower, take what the rows leave.
    ("batch", ("data", "fsdp")),
    ("act_length", ("data", "fsdp")),
    ("patches", ("data", "fsdp")),
    ("segments", ("data", "fsdp")),
)
