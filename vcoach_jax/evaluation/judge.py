"""Answer judges: score a predicted answer against the ground truth on V-STAR's 0-3 scale.

The reference judges free-form answers with a 72B LLM; here the judge is pluggable:

  ExactJudge()              3 when the normalised texts are equal, else 0
  RougeJudge((t1, t2, t3))  3 on a normalised exact match; otherwise ROUGE (the mean of the
                            ROUGE-1/2/L F-measures, `rewards.accuracy.rouge_f`) >= t3 -> 3,
                            >= t2 -> 2, >= t1 -> 1, else 0. The default (0.3, 0.7, 0.9) is
                            strict because short answers differ in one word: "two objects
                            appear" vs "three objects appear" (0.61) and "the blue ball" vs "the
                            red ball" (0.44) score 1, while "the red ball is shown" vs "the red
                            ball" (0.72) scores 2, i.e. correct.
  ModelJudge(generate)      asks a local language model; `generate(prompts) -> texts`

Multiple-choice answers are not judged but compared by letter (`extract_letter`).
"""

from __future__ import annotations

import pathlib
import re
import string
from typing import Callable, Protocol, Sequence

from vcoach_jax import storage
from vcoach_jax.rewards import accuracy
from vcoach_jax.rewards import parsing
from vcoach_jax.rewards import scan

LETTERS = "ABCDEFGHIJ"
DEFAULT_ROUGE_THRESHOLDS = (0.3, 0.7, 0.9)
_ARTICLES = {"a", "an", "the"}
_STANDALONE_LETTER = re.compile(r"(?<![A-Za-z])\(?([A-J])(?:[).:\]]|(?![A-Za-z]))")


class Judge(Protocol):
  """Scores (question, ground truth, prediction) triples on a 0-3 scale."""

  def score_many(self, questions: Sequence[str], answers: Sequence[str],
                 predictions: Sequence[str]) -> list[int]:
    ...


def normalise(text: str) -> str:
  """Lower case, punctuation and articles removed, whitespace collapsed."""
  text = text.lower().translate(str.maketrans("", "", string.punctuation))
  return " ".join(w for w in text.split() if w not in _ARTICLES)


class ExactJudge:
  """3 for a normalised exact match, else 0."""

  def score_many(self, questions, answers, predictions) -> list[int]:
    del questions
    return [3 if normalise(a) == normalise(p) and normalise(a) else 0
            for a, p in zip(answers, predictions)]


class RougeJudge:
  """Exact match -> 3, else ROUGE F thresholds (see the module docstring)."""

  def __init__(self, thresholds: Sequence[float] = DEFAULT_ROUGE_THRESHOLDS):
    thresholds = tuple(float(t) for t in thresholds)
    if len(thresholds) != 3 or not 0 <= thresholds[0] <= thresholds[1] <= thresholds[2] <= 1:
      raise ValueError(f"rouge judge thresholds must be 3 increasing numbers in [0, 1], got "
                       f"{thresholds}")
    self.thresholds = thresholds

  def score(self, answer: str, prediction: str) -> int:
    if normalise(answer) and normalise(answer) == normalise(prediction):
      return 3
    if not prediction.strip() or not answer.strip():
      return 0
    f = accuracy.rouge_f(answer, prediction)
    return sum(f >= t for t in self.thresholds)

  def score_many(self, questions, answers, predictions) -> list[int]:
    del questions
    return [self.score(a, p) for a, p in zip(answers, predictions)]


JUDGE_PROMPT_FILE = str(pathlib.Path(__file__).resolve().parent.parent / "assets" /
                        "judge_prompt.json")


def load_judge_prompt(path: str | None = None) -> tuple[str, str]:
  """(system, user template) of a judge prompt file (default: the project's own)."""
  path = path or JUDGE_PROMPT_FILE
  raw = storage.read_json(path, "judge prompt file")
  for key in ("system", "user"):
    if not isinstance(raw.get(key), str):
      raise ValueError(f"judge prompt file {path}: {key!r} must be a string")
  for field in ("{question}", "{answer}", "{prediction}"):
    if field not in raw["user"]:
      raise ValueError(f"judge prompt file {path}: 'user' has no {field} field")
  return raw["system"], raw["user"]


class ModelJudge:
  """A local model as judge: `generate(prompts) -> texts`, greedy, a few tokens.

  `parse` reads the grade off a reply: by default its first digit 0-3 (0 when none); the
  reference protocols read the whole reply as an integer (-1 when it is not one: never
  correct).
  """

  def __init__(self, generate: Callable[[list[str]], list[str]], prompt_file: str | None = None,
               parse: Callable[[str], int] | None = None):
    self.generate = generate
    self.system, self.template = load_judge_prompt(prompt_file)
    self.parse = parse or parse_grade

  def prompts(self, questions, answers, predictions) -> list[str]:
    from vcoach_jax.data import chat  # pylint: disable=g-import-not-at-top
    return [chat.chat_text(self.system, self.template.format(question=q, answer=a, prediction=p))
            for q, a, p in zip(questions, answers, predictions)]

  def score_many(self, questions, answers, predictions) -> list[int]:
    if not questions:
      return []
    replies = self.generate(self.prompts(questions, answers, predictions))
    return [self.parse(r) for r in replies]


def parse_grade(reply: str) -> int:
  """First digit 0-3 of a judge's reply; 0 when there is none."""
  match = re.search(r"[0-3]", reply or "")
  return int(match.group(0)) if match else 0


SPECS = ("exact", "rouge", "model:DIR")


def parse_spec(spec: str) -> tuple[str, str | None]:
  """A judge spec -> (kind, model folder): `exact` and `rouge` -> (spec, None), `model:DIR` ->
  ("model", DIR). Raises ValueError for anything else (an empty DIR included)."""
  if spec in ("exact", "rouge"):
    return spec, None
  if isinstance(spec, str) and spec.startswith("model:") and len(spec) > len("model:"):
    return "model", spec[len("model:"):]
  raise ValueError(f"unknown judge {spec!r}; expected 'exact', 'rouge' or 'model:DIR'")


def make_judge(spec: str, thresholds: Sequence[float] = DEFAULT_ROUGE_THRESHOLDS,
               generate: Callable[[list[str]], list[str]] | None = None,
               parse: Callable[[str], int] | None = None, prompt_file: str | None = None
               ) -> Judge:
  """`exact` | `rouge` | `model:DIR` (then `generate` must be the loaded model's; `parse` reads
  its replies and `prompt_file` holds its prompt, see `ModelJudge`)."""
  kind, folder = parse_spec(spec)
  if kind == "exact":
    return ExactJudge()
  if kind == "rouge":
    return RougeJudge(thresholds)
  if generate is None:
    raise ValueError(f"judge {spec!r} needs a generate function for the model in {folder!r}")
  return ModelJudge(generate, prompt_file, parse)


def grade_pending(judge: Judge, pending: Sequence[tuple[int, str, str, str]], results: list,
                  correct_score: int) -> None:
  """Grades the free-form answers collected while scoring, in one `score_many` call: each of
  `pending` is (index into `results`, question, ground truth, predicted answer); sets that
  result's `score` and `correct` (score >= `correct_score`)."""
  if not pending:
    return
  grades = judge.score_many([q for _, q, _, _ in pending], [a for _, _, a, _ in pending],
                            [p for _, _, _, p in pending])
  for (i, *_), grade in zip(pending, grades):
    results[i]["score"] = int(grade)
    results[i]["correct"] = int(grade) >= correct_score


def answer_text(completion: str) -> str:
  """The answer a completion gives: its `<answer>` block, else the whole text, stripped."""
  if scan.block(completion or "", "<answer>", "</answer>") is not None:
    return parsing.extract_answer(completion)
  return (completion or "").strip()


def extract_letter(text: str, options: Sequence[str] = (), letters: str = "ABCD") -> str | None:
  """The option letter a multiple-choice answer picks, or None.

  Tries, in order: the text after `Correct Option:` (temporal MCQ); the whole answer written as
  `B`, `B.`, `(B)` or `[B]`; the answer equal to one option's text; the first stand-alone
  capital letter among the valid ones (`B) red`, `Answer: B`).

  Args:
    text: the answer text (see `answer_text`).
    options: the option texts in letter order (they also fix the valid letters).
    letters: the valid letters when `options` is empty.
  """
  valid = LETTERS[:len(options)] if options else letters
  pieces = text.split(accuracy.MCQ_MARKER)
  text = (pieces[1] if len(pieces) > 1 else text).strip()
  for letter in valid:
    if accuracy.option_matches(text, letter):
      return letter
  for letter, option in zip(valid, options):
    if normalise(text) and normalise(text) == normalise(option):
      return letter
  for match in _STANDALONE_LETTER.finditer(text):
    if match.group(1) in valid:
      return match.group(1)
  return None
