"""Each prompt of an RL step computed once, with gradient accumulation.

With `optim.grad_accum = k > 1` the step's B prompts arrive cut into k micro-batches of B/k
prompts (and their B/k * G completions). Running each micro-batch's prompts inside its own
forward gives a forward of B/k rows, which does not divide the devices when B/k is smaller
than the mesh (8 prompts, 4 micro-batches, 8 devices: 2 prompt rows), so the prompt forward
(vision tower included) splits by tokens and patches instead of rows, with activation
collectives and repeated work. Here the prompts of all micro-batches run in ONE forward of B
rows, once per step (`shared`, for `update.update_fn`'s `shared_fn`): the policy's (its keys,
values and last hidden state are differentiated) and the reference's (not). Each micro-batch
then runs only its completions against its prompts' slice (`rl.logprobs.states_logprobs`);
the gradients with respect to that slice are pulled back through the one prompt forward after
the last micro-batch. The losses and the update are the ones of the per-micro-batch forward.

The price is memory: every prompt's keys and values (policy, prompted branch and reference)
live for the whole step, with their gradients. `optim.prompt_once = False` turns this off (each
micro-batch runs its own prompts; `rl.train_step.update_fn`), e.g. where the step-long prompt
states do not fit (`vcoach plan` says).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from vcoach_jax.model.batching import merge_microbatches
from vcoach_jax.rl.logprobs import PromptStates, prompt_states, states_logprobs


class StepStates(NamedTuple):
  """Prompt states of one step (or, sliced, of one micro-batch)."""
  raw: PromptStates
  prompted: PromptStates | None


def split_states(states: PromptStates, k: int) -> PromptStates:
  """States of B = k*r prompts -> a leading micro-batch axis: [k, r, D] and [k, L, r, T, K, H]."""
  def rows(x, axis):
    x = x.reshape(x.shape[:axis] + (k, x.shape[axis] // k) + x.shape[axis + 1:])
    return jnp.moveaxis(x, axis, 0)
  return PromptStates(last=rows(states.last, 0), k=rows(states.k, 1), v=rows(states.v, 1))


def _states(model, stacked_prompt, k: int) -> PromptStates:
  return split_states(prompt_states(model, merge_microbatches(stacked_prompt)), k)


def shared_fn(graphdef, k: int, use_reference: bool):
  """`update.update_fn`'s `shared_fn` of the VisionCoach loss: (policy `StepStates`,
  reference `PromptStates` of the raw prompts or None), each with a leading micro-batch axis."""
  def fn(model, ref_params, batch):
    policy = StepStates(_states(model, batch.raw.prompt, k),
                        None if batch.prompted is None else
                        _states(model, batch.prompted.prompt, k))
    ref = None
    if use_reference and ref_params is not None:
      ref = jax.lax.stop_gradient(_states(nnx.merge(graphdef, ref_params), batch.raw.prompt, k))
    return policy, ref
  return fn


def reference_logprobs(ref_model, raw, states: PromptStates | None, group_size: int):
  """[B*G, N] no-grad log-probs of a micro-batch's raw rollouts from the reference's prompt
  states (None: no KL term)."""
  if ref_model is None or states is None:
    return None
  return jax.lax.stop_gradient(
      states_logprobs(ref_model, raw.prompt, states, raw.tokens, raw.mask, group_size))
