"""Mesh axis names and the default logical-axis -> mesh-axes rules (no JAX import: configs use it).

Weights: FSDP over the model width, tensor parallelism over heads / mlp / vocab. Activations:
the batch over data x fsdp. A config replaces the table through `config.parallel.rules`.
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
    # Activations.
    ("batch", ("data", "fsdp")),
)
