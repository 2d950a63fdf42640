"""The claim scanner equals the claim regex it replaces, in linear time.

`parsing.CLAIM_RE` / `CLAIM_BOX_RE` state the released code's claim syntax; Python's backtracking
engine needs minutes on a few thousand unclosed claims. `parsing.claim_matches` / `bracketed`
must give exactly the regex's groups on any text, so they are compared on random tag soups built
from the tokens that matter (including newlines, which the box pattern does not cross).
"""

import random
import time

import pytest

from vcoach_jax.rewards import parsing

TOKENS = ["<obj>", "</obj>", "<box>[", "]</box>", "<box>", "</box>", "[", "]", "at<t>", "</t>s",
          "</t>", "<t>", "a", "1", " ", "\n", ",", "s", "at", "<", "/", "]</box>at<t>",
          "</obj><box>[", "]</box><box>["]
# Fewer kinds of token: more texts that hold one or several whole claims.
CLAIM_TOKENS = ["<obj>", "</obj>", "<box>[", "]</box>", "at<t>", "</t>s", "a", "1", "\n", "]",
                "[", "</obj><box>[", "]</box>at<t>", "]</box><box>["]


@pytest.mark.parametrize("tokens,seed", [(TOKENS, 0), (CLAIM_TOKENS, 1)])
def test_claim_scanner_equals_the_regex_on_random_soups(tokens, seed):
  rng = random.Random(seed)
  with_claims = 0
  for _ in range(40_000):
    text = "".join(rng.choice(tokens) for _ in range(rng.randint(0, 36)))
    expected = [m.groups() for m in parsing.CLAIM_RE.finditer(text)]
    assert list(parsing.claim_matches(text)) == expected, repr(text)
    assert parsing.bracketed(text) == parsing.CLAIM_BOX_RE.findall(text), repr(text)
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
  assert parsing.bracketed("[" * 1_000_000 + "\n]") == []
  assert time.perf_counter() - start < 2.0
  small = "".join(f"<obj>a</obj><box>[{i},{i},9,9]</box>" for i in range(30)) + "at<t>1</t>s"
  assert [m.groups() for m in parsing.CLAIM_RE.finditer(small)] == list(
      parsing.claim_matches(small))
  (claim,) = parsing.parse_claims(body + "at<t>1</t>s")
  assert claim.name == "a" and len(claim.boxes) == 200_000 and claim.time == 1.0
