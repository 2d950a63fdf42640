"""Visual-prompt coaching (docs/design.md §8.4-8.6): renderers, prompted inputs, the VP-Selector.

  visual_prompts  darken / circle / numbers / attention in numpy, `render`, `prompt_key_frames`
  hints           `prompted_example`, `prompted_prompt`, `hint`, `PromptOptions`
  selector        the VP-Selector (text and VL forms), training, checkpoints, prediction cache
  selector_data   labels from proxy reasoners (`vcoach select build-data`)
"""
