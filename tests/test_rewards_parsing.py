"""The scanners equal the patterns they replace, in linear time.

`parsing.*_RE` state the released code's syntax; Python's backtracking engine needs seconds to
minutes on some tens of KB of unclosed tags. `scan.*` must give exactly the patterns' results on
any text, so they are compared on random tag soups built from the tokens that matter (newlines,
which the box patterns do not cross; Unicode whitespace and word characters).
"""

import random
import time

import pytest

from vcoach_jax.rewards import parsing
from vcoach_jax.rewards import scan
from vcoach_jax.rewards.format import format_reward

TOKENS = ["<obj>", "</obj>", "<box>[", "]</box>", "<box>", "</box>", "[", "]", "at<t>", "</t>s",
          "</t>", "<t>", "a", "1", " ", "\n", ",", "s", "at", "<", "/", "]</box>at<t>",
          "</obj><box>[", "]</box><box>["]
# Fewer kinds of token: more texts that hold one or several whole claims.
CLAIM_TOKENS = ["<obj>", "</obj>", "<box>[", "]</box>", "at<t>", "</t>s", "a", "1", "\n", "]",
                "[", "</obj><box>[", "]</box>at<t>", "]</box><box>["]


# Block and box tokens, with Unicode whitespace (\u2003, \x1c, \x85) and word characters (é, _).
BLOCK_TOKENS = ["<think>", "</think>", "<answer>", "</answer>", "<box>[", "]</box>", "<box>",
                "</box>", "<obj>", "</obj>", "</obj><box>[", "[", "]", "a", "é", "_", "-", " ",
                "\n", "\u2003", "\x1c", "\x85", "\t", "x y", "<obj>é_1</obj><box>[", "<obj>a"]


def test_block_and_box_scanners_equal_the_patterns_on_random_soups():
  rng = random.Random(2)
  found = {"think": 0, "answer": 0, "box": 0, "named": 0}
  for _ in range(40_000):
    text = "".join(rng.choice(BLOCK_TOKENS) for _ in range(rng.randint(0, 24)))
    think = parsing.THINK_RE.search(text)
    assert scan.block(text, "<think>", "</think>") == (think.group(1) if think else None)
    answer = parsing.ANSWER_BLOCK_RE.search(text)
    assert scan.block(text, "<answer>", "</answer>") == (answer.group(1) if answer else None)
    assert (parsing.ANSWER_ANY_RE.search(text) is None) == (answer is None)
    text_match = parsing.ANSWER_TEXT_RE.search(text)
    assert parsing.extract_answer(text) == (text_match.group(1).strip() if text_match else "")
    assert list(scan.box_groups(text)) == parsing.BOX_RE.findall(text), repr(text)
    named = parsing.NAMED_BOX_RE.search(text) is not None
    assert scan.has_named_box(text) == named, repr(text)
    found["think"] += think is not None
    found["answer"] += answer is not None
    found["box"] += bool(parsing.BOX_RE.search(text))
    found["named"] += named
  assert min(found.values()) > 100, found


def test_unclosed_tags_parse_in_linear_time():
  """64 KB of unclosed `<think>`, `<answer>`, `<box>[` or `<obj>a</obj><box>[` took 5-20 s each
  in the patterns (quadratic); 1 MB of each is scanned at once."""
  n = 125_000
  texts = ["<think>x" * n, "<answer>x" * n,
           "<think>" + "<box>[1," * n + "</think><answer>a</answer>",
           "<think>" + "<obj>a</obj><box>[1,\n" * n + "</think><answer>a</answer>"]
  start = time.perf_counter()
  for text in texts:
    parsing.parse_completion(text)
    format_reward(text, "visual QA")
  assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize("tokens,seed", [(TOKENS, 0), (CLAIM_TOKENS, 1)])
def test_claim_scanner_equals_the_regex_on_random_soups(tokens, seed):
  rng = random.Random(seed)
  with_claims = 0
  for _ in range(40_000):
    text = "".join(rng.choice(tokens) for _ in range(rng.randint(0, 36)))
    expected = [m.groups() for m in parsing.CLAIM_RE.finditer(text)]
    assert list(scan.claim_matches(text)) == expected, repr(text)
    assert scan.bracketed(text) == parsing.CLAIM_BOX_RE.findall(text), repr(text)
    with_claims += bool(expected)
  assert with_claims > 300  # the soups do exercise matches, not only failures


def test_claims_that_never_close_parse_in_linear_time():
  """200,000 visual-QA style `<obj>a</obj><box>[..]</box>` (9 MB, no `at<t>..</t>s`): the regex
  needed about 150 s for 1,000 of them; the scanner finds no claim at once. Closing the last one
  makes a single claim holding every box (the run may span the whole text)."""
  body = "".join(f"<obj>a</obj><box>[{i % 60},{i % 60},{i % 60 + 40},{i % 60 + 40}]</box>"
                 for i in range(200_000))
  start = time.perf_counter()
  assert parsing.parse_claims(body) == ()
  assert scan.bracketed("[" * 1_000_000 + "\n]") == []
  assert time.perf_counter() - start < 2.0
  small = "".join(f"<obj>a</obj><box>[{i},{i},9,9]</box>" for i in range(30)) + "at<t>1</t>s"
  assert [m.groups() for m in parsing.CLAIM_RE.finditer(small)] == list(
      scan.claim_matches(small))
  (claim,) = parsing.parse_claims(body + "at<t>1</t>s")
  assert claim.name == "a" and len(claim.boxes) == 200_000 and claim.time == 1.0
