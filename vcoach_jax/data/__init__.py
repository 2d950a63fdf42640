"""Input data (docs/design.md §6, §8.2, §10).

  video.py      frame sampling, smart resize, decord decode, still images
  chat.py       prompt construction (texts from assets/prompts.json) and the Qwen2.5-VL processor
  records.py    the STGR record schema and its validation (docs/data.md)
  tfds_stgr.py  one record + its media (or the synthetic world) -> TFDS examples; roots
  prepare_stgr.py  `vcoach prepare`: STGR json -> TFDS dataset; content-keyed work files, splits
  synthetic.py  the synthetic grounded-video world of the embedded default
  tokenizer.py  the tiny local tokenizer; loading a real one
  pipeline.py   tf.data -> fixed-shape host batches -> global jax.Arrays

Modules are imported on demand; none imports TensorFlow or JAX at import time.
"""
