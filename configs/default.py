"""The embedded default: tiny model, synthetic grounded-video data, CPU.

Every hyper-parameter of the project lives here, each on its own line; other configs start from
this one and change a few fields. It is also the schema: a config or a `--set` override naming a
key that is not here, or giving a value of another type, is refused at start.

  vcoach rewards vcoach_jax/assets/example_completions.jsonl
  vcoach rewards IN.jsonl --config configs/default.py --set rewards.spatial_iou_mode=max
"""

import ml_collections

from vcoach_jax import recipes
from vcoach_jax.parallel import rules


def get_config(arg=None):
  """Returns the default config; `default.py:runlocal` shrinks its world, `method=gspo|coach|full`
  sets rl.method (vcoach_jax/recipes.py)."""
  arg = recipes.arguments(arg)
  config = ml_collections.ConfigDict()

  # --- Rewards (docs/rewards.md). Values of the paper's run; the released code's CLI defaults are
  # max / none / all / True.
  config.rewards = ml_collections.ConfigDict()
  config.rewards.spatial_iou_mode = "avg"  # max | avg: how a claim scores several GT objects.
  config.rewards.identity_match_mode = "soft"  # none | soft | strict: claim name vs GT object.
  config.rewards.spatial_norm_mode = "matched"  # all | matched: thk_spatial denominator.
  config.rewards.correct_tempgate = True  # |g - t| <= 1 s (True) or the one-sided g - t < 1 s.
  # Fixed shapes of the reward kernels. Rows that need more grow to the next power of two (a new
  # compilation, counted); a much larger row is packed with rows of its size class
  # (docs/rewards.md, "Memory"); a result never changes because of these.
  config.rewards.max_times = 16  # time tags per think block
  config.rewards.max_claims = 8  # <obj>..<box>..at<t>..s claims per think block
  config.rewards.max_boxes = 8  # boxes per claim (all claims: x max_claims), VQA think boxes
  config.rewards.max_key_frames = 8  # key frames per sample
  config.rewards.max_objects = 4  # GT objects per key frame
  config.rewards.max_gt_boxes = 2  # GT boxes per object

  # --- Model (Qwen2.5-VL, vcoach_jax/model). With no checkpoint a random model of `preset` is
  # built (the embedded default is `tiny`); with one, sizes come from its config.json.
  config.model = ml_collections.ConfigDict()
  config.model.checkpoint = ""  # HF Qwen2.5-VL folder (config.json + safetensors); "" = random
  # ModelConfig presets: tiny | tiny_deep | tiny_wide | qwen2_5_vl_3b | qwen2_5_vl_7b
  config.model.preset = "tiny"
  config.model.dtype = "float32"  # float32 | bfloat16: params and compute (softmax/norms fp32)
  # xla (CPU, tests) | chunked (xla in query blocks: O(block x keys) memory) |
  # dot_product_attention | cudnn
  config.model.attention_impl = "xla"
  config.model.attention_chunk = 512  # query block of attention_impl=chunked
  config.model.remat_policy = "none"  # none | full | dots | dots_no_batch (layers.remat_policy)
  # Decoder layers stacked on a leading axis and run by one lax.scan: one compiled layer body
  # (compile time flat in depth); weights load and save in the HF layout either way.
  config.model.scan_layers = False
  config.model.lora_rank = 0  # 0 = no LoRA; otherwise adapters on lora_targets
  config.model.lora_alpha = 16.0  # LoRA scale = alpha / rank
  config.model.lora_targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                               "down_proj")  # regexes matched at the end of a linear's path

  # --- Sampling (vcoach_jax/sampling; docs/design.md §8.1, reference values).
  config.sampling = ml_collections.ConfigDict()
  config.sampling.temperature = 1.0  # softmax temperature (0 = greedy)
  config.sampling.top_p = 0.95  # nucleus mass in (0, 1]; 1 = off
  config.sampling.top_k = 50  # keep the k most likely tokens; 0 = off
  config.sampling.greedy = False  # argmax decoding (evaluation, `vcoach generate`)
  config.sampling.max_new_tokens = 768  # completion length limit (max_completion_length)
  config.sampling.num_samples = 4  # G rollouts per prompt
  config.sampling.repetition_penalty = 1.0  # seen ids' logits / p (> 0) or * p (< 0); 1 = off
  config.sampling.batch_buckets = (1, 2, 4, 8, 16, 32, 64)  # prompt rows are padded to these
  # The decoding copy of the weights, made once per generate call (vcoach_jax/sampling/weights.py):
  # auto (replicated when it fits in half a device's memory, else split over `tensor`),
  # replicated, tensor, or as_trained (decode from the fp32 master weights as sharded).
  config.sampling.weights_layout = "auto"

  # --- Parallel (vcoach_jax/parallel/mesh.py). One size per mesh axis; -1 = remaining devices.
  config.parallel = ml_collections.ConfigDict()
  config.parallel.mesh = (("data", 1), ("fsdp", -1), ("tensor", 1))
  # Logical axis -> mesh axes (vcoach_jax/parallel/rules.py): FSDP over the width, tensor
  # parallel over heads/mlp/vocab, batch over data x fsdp. Replace the tuple to change layouts.
  config.parallel.rules = rules.DEFAULT_RULES

  # --- Video (docs/design.md §6; reference constants). Frame count n = duration * fps clamped to
  # [min_frames, min(max_frames, total)] and floored to even; each frame is smart-resized to
  # multiples of 28 between pixels_factor*28*28 and max(min(that, total_pixels/n*2), 1.05*that).
  config.video = ml_collections.ConfigDict()
  config.video.fps = 2.0  # frames sampled per second of video
  config.video.min_frames = 4
  config.video.max_frames = 16
  config.video.frame_factor = 2  # frame counts are multiples of the temporal patch
  config.video.pixels_factor = 128  # the reference's VIDEO_PIXELS_FACTOR
  config.video.total_pixels = 90316800  # 128000*28*28*0.9: pixel budget over a video's frames
  config.video.image_min_pixels = 3136  # 4*28*28, still images (visual QA)
  config.video.image_max_pixels = 200704  # 256*28*28
  # Frame labels and key-frame insertion (docs/prompts.md): exact (true times) | reference (the
  # released trainers' rule, for checkpoints trained by the authors' code).
  config.video.timestamps = "exact"

  # --- Data: prompts, tokenizer, TFDS input pipeline (docs/design.md §6, §8.2).
  config.prompts_file = ""  # JSON of system/frame/hint texts; "" = vcoach_jax/assets/prompts.json
  config.data = ml_collections.ConfigDict()
  config.data.source = "synthetic"  # synthetic (the world below) | tfds (a `vcoach prepare` output)
  config.data.tfds_dir = ""  # folder written by `vcoach prepare --out` (source = tfds)
  config.data.split = "train"
  config.data.tokenizer_dir = ""  # tokenizer folder; "" = build the tiny tokenizer (synthetic)
  config.data.tiny_vocab_size = 1024  # size of the tiny tokenizer trained on the world's text
  config.data.batch_size = 8  # prompts per step, global (split over hosts)
  config.data.prompt_buckets = (256, 512, 1024, 2048, 4096, 8192, 16384)  # padded prompt lengths
  config.data.max_prompt_length = 16384  # prompts are left-truncated to their last N tokens
  config.data.max_target_length = 96  # SFT target tokens, right-padded (the world needs <= 80)
  config.data.max_images = 20  # images per prompt: sampled frames + inserted key frames
  config.data.max_patches = 256  # 14x14 patches per prompt, padded (the world needs <= 192)
  config.data.shuffle_buffer = 256
  config.data.seed = 0
  config.data.reshuffle_each_epoch = True
  # The split is read as this many parts (each shuffled with seed + part); each batch takes
  # batch_size / read_parts rows from each part, and each process reads only its parts.
  # Batches depend on it, not on the process count; 0: one part per process (docs/data.md).
  config.data.read_parts = 0

  # --- Synthetic world (docs/design.md §10): seeded clips of moving coloured objects.
  config.synthetic = ml_collections.ConfigDict()
  config.synthetic.seed = 0
  config.synthetic.num_train = 512  # records in the train split
  config.synthetic.num_eval = 64  # records in the eval split (seeded apart from train)
  config.synthetic.height = 56  # frame size (multiples of 28); clips are rendered at this size
  config.synthetic.width = 84
  config.synthetic.fps = 2.0
  config.synthetic.min_frames = 4
  config.synthetic.max_frames = 8
  config.synthetic.min_objects = 1
  config.synthetic.max_objects = 2
  config.synthetic.distractors = 1  # difficulty: extra objects that are not asked about
  config.synthetic.occlusion = 0.0  # difficulty: probability of a grey bar over a frame
  config.synthetic.lookalike = 0.0  # difficulty: probability a distractor has the asked shape
  config.synthetic.min_size = 10  # object side in pixels
  config.synthetic.max_size = 18
  config.synthetic.max_speed = 6.0  # pixels per frame
  config.synthetic.grid = 0  # > 0: objects centred in cells of this many pixels (0: anywhere)
  config.synthetic.background = "plain"  # plain | gradient (colour varies with the position)
  config.synthetic.named = False  # the temporal-spatial question names its object (colour, shape)
  config.synthetic.colours = 8  # objects' colours: the first N of synthetic.COLOURS (1..8)
  config.synthetic.shapes = 4  # objects' shapes: the first N of synthetic.SHAPES (1..4)
  # Tasks the records cycle through (the demo keeps the spatio-temporal one: the grounded task).
  config.synthetic.tasks = ("temporal-spatial free-form QA", "temporal QA (MCQ)", "temporal QA",
                            "visual QA", "General video QA MCQ", "General video QA Free-form")

  # --- Visual prompts (docs/design.md §8.4-8.5, vcoach_jax/prompting).
  config.prompting = ml_collections.ConfigDict()
  config.prompting.per_key_frame_boxes = True  # each key frame's own boxes (False: all, as ref)
  config.prompting.draw_on = "key_frames_st_only"  # key_frames_st_only (ref) | key_and_nearest
  config.prompting.darken_factor = 0.3  # reference: pixels outside the boxes * 0.3
  config.prompting.darken_pad = 10  # reference: boxes grown by 10 px before darkening

  # --- VP-Selector (docs/design.md §8.6, vcoach_jax/prompting/selector.py).
  config.selector = ml_collections.ConfigDict()
  config.selector.mode = "text"  # text (reference: question + object names) | vl (video + question)
  config.selector.types = ("raw", "darken")  # class names in order; reference: raw, darken
  config.selector.backbone = ""  # HF Qwen2.5-VL folder; "" = the model of config.model
  config.selector.lora_rank = 8
  config.selector.lora_alpha = 16.0
  config.selector.lr = 1e-4  # AdamW learning rate (constant)
  config.selector.weight_decay = 0.01
  config.selector.steps = 200  # optimizer steps of `vcoach select train`
  config.selector.batch_size = 8
  config.selector.max_length = 256  # text-mode tokens (longer inputs keep their last ones)
  config.selector.data = ""  # labelled JSONL written by `vcoach select build-data`
  config.selector.cache = ""  # JSON {record_id: type} written by predict, read by the trainer
  config.selector.checkpoint_dir = ""  # orbax checkpoint of the trainable selector params
  config.selector.reasoners = ()  # build-data: proxy reasoner checkpoints; () = config.model
  config.selector.max_new_tokens = 128  # build-data: greedy completion length
  config.selector.seed = 0

  # --- Evaluation (docs/design.md §9, vcoach_jax/evaluation). `vcoach eval` flags override the first five.
  config.eval = ml_collections.ConfigDict()
  config.eval.benchmark = "synthetic"  # vstar | charades | videomme | worldsense | videommmu | perceptiontest | synthetic
  config.eval.data = ""  # annotation file of the benchmark ("" for synthetic)
  config.eval.video_dir = ""  # folder of the benchmark's videos; "" = the annotation file's folder
  config.eval.split = "eval"  # synthetic split: eval (held out) | train
  config.eval.batch_size = 8  # prompts per generate call (an item's prompts stay together)
  config.eval.limit = 0  # evaluate the first N items only; 0 = all
  config.eval.judge = "rouge"  # exact | rouge | model:DIR (a local model grades 0-3)
  config.eval.protocol = "training"  # training | vstar_reference | charades_reference
  config.eval.protocol_prompts = ""  # prompt set replacing a reference protocol's own; "" = its own
  config.eval.judge_prompt = ""  # judge prompt JSON of --judge model:DIR; "" = the project's own
  config.eval.rouge_thresholds = (0.3, 0.7, 0.9)  # ROUGE F for judge scores 1, 2, 3 (judge.py)
  config.eval.correct_score = 2  # judge score counted as a correct answer (V-STAR: >= 2)
  config.eval.recall_thresholds = (0.3, 0.5, 0.7)  # temporal R1@IoU
  config.eval.map_thresholds = (0.1, 0.3, 0.5, 0.7, 0.9)  # spatial mAP@IoU (the reference's five)
  config.eval.joint_tiou = 0.3  # joint rates: tIoU at least this ...
  config.eval.joint_miou = 0.1  # ... and item mIoU at least this
  config.eval.lgm_eps = 1e-6  # LGM clips each mean to 1 - eps (ln(0) guard)
  config.eval.length_bounds = (60.0, 180.0)  # video-length buckets in seconds: short | medium | long
  # --- RL and coaching (docs/design.md §8.3-8.4; reference values). G is sampling.num_samples.
  config.rl = ml_collections.ConfigDict()
  config.rl.method = "full"  # gspo | coach | full (vcoach_jax/rl/methods.py; full = VisionCoach)
  config.rl.k1 = 2.21  # a prompt is hard when its raw group's mean total reward is < k1
  config.rl.k1_per_task = ()  # ((task, k1), ...) overriding k1 for those tasks; () = none
  config.rl.candidate_rule = "answer"  # answer (released code) | total (paper text)
  config.rl.num_positives = 2  # top N candidates by ans_acc get the NLL loss
  config.rl.alpha = 0.1  # weight of the self-distillation NLL on hard prompts
  config.rl.beta = 0.04  # weight of the k3 KL to the frozen reference
  config.rl.eps_low = 0.2  # GSPO ratio clip band [1 - eps_low, 1 + eps_high]
  config.rl.eps_high = 0.2  # (GSPO paper: 3e-4 / 4e-4)
  config.rl.mu = 1  # optimisation passes per rollout batch (1 = reference, ratio == 1)
  config.rl.minibatches = 1  # minibatches per pass when mu > 1
  config.rl.max_nonfinite_steps = 5  # stop after this many skipped (non-finite) updates in a row
  config.rl.prompt_selector = "cache"  # cache (selector.cache predictions) | off (always raw)

  # --- Optimiser (docs/design.md §8.7). lr 1e-6 is the 7B run's; the tiny demo uses larger.
  config.optim = ml_collections.ConfigDict()
  config.optim.lr = 1e-6  # peak learning rate
  config.optim.schedule = "cosine"  # cosine (decay to 0) | constant
  config.optim.warmup_steps = 0  # linear warmup steps before the schedule (reference: 0)
  config.optim.total_steps = 1000  # optimizer steps of the run (cosine length)
  # > 0: total_steps = ceil(epochs x examples in data.split / data.batch_size), counted from the
  # dataset at start (`vcoach train`; SFT runs sft.steps). 0 = total_steps as set.
  config.optim.epochs = 0.0
  config.optim.weight_decay = 0.01  # AdamW decay, not on biases and norm scales
  config.optim.clip_norm = 5.0  # global gradient-norm clip
  config.optim.b1 = 0.9
  config.optim.b2 = 0.999
  config.optim.eps = 1e-8
  config.optim.freeze_vision = False  # True: the vision tower gets no updates
  config.optim.grad_accum = 1  # micro-batches per optimizer step (lax.scan)
  # grad_accum > 1: True runs the prompts of all micro-batches in one forward per step
  # (vcoach_jax/rl/prompt_once.py: rows divide the devices; holds every prompt's keys and values
  # for the step); False runs each micro-batch's prompts with it (less memory). Same update.
  config.optim.prompt_once = True

  # --- Checkpoints (orbax): params, optimizer, rng, step, config, data-iterator position.
  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.dir = ""  # "" = no checkpoints
  config.checkpoint.every_steps = 100  # save every N optimizer steps (and at the end)
  config.checkpoint.keep = 3  # keep the last k checkpoints

  # --- Cold-start SFT (docs/design.md §8.8): token cross-entropy on the assistant turn.
  config.sft = ml_collections.ConfigDict()
  config.sft.steps = 200  # optimizer steps
  config.sft.lr = 1e-6  # peak learning rate (replaces optim.lr during SFT)
  config.sft.warmup_steps = 0  # linear warmup steps (replaces optim.warmup_steps during SFT)
  # assistant (the target turn only) | sequence (the released SFT: every non-pad token of prompt
  # and target except the image placeholders; docs/prompts.md)
  config.sft.loss_on = "assistant"
  # Share of the examples with key items shown with a visual prompt (one of selector.types other
  # than raw, drawn on the key frames) and its hint, as coaching shows a hard sample; 0 = none.
  config.sft.prompted = 0.0
  # Loss weight of the box coordinates' tokens (inside <box>...</box>, when the tokenizer has
  # the tags as single tokens); 1 = the plain token mean.
  config.sft.box_weight = 1.0

  return recipes.finish(config, arg)
