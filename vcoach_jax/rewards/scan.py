"""Linear-time scanners that find exactly what the reward patterns of `parsing` find.

The patterns (`parsing.THINK_RE`, `ANSWER_*`, `BOX_RE`, `NAMED_BOX_RE`, `CLAIM_RE`,
`CLAIM_BOX_RE`) state the released code's syntax. Python's backtracking engine retries them from
every later start when a closing tag is missing, which is quadratic or worse in the text: a
policy's 64 KB of unclosed `<answer>` tags took 20 s, 1,000 unclosed visual-QA style claims
150 s. Each scanner here gives the pattern's own result (`tests/test_rewards_parsing.py` checks
them against the patterns on random tag soups) using `str.find`, each character visited a
bounded number of times.
"""

from __future__ import annotations

from typing import Iterator


def block(text: str, open_tag: str, close_tag: str) -> str | None:
  """The text between the first `open_tag` and the first `close_tag` after it (the group of
  `open(.*?)close` with DOTALL); None when there is none. A later `open_tag` cannot do better:
  it has no `close_tag` after it either."""
  start = text.find(open_tag)
  if start < 0:
    return None
  end = text.find(close_tag, start + len(open_tag))
  return None if end < 0 else text[start + len(open_tag):end]


def box_groups(text: str) -> Iterator[str]:
  """The groups of `BOX_RE.finditer(text)` (`<box>(\\[.*?\\])</box>`, no newline inside): each
  `<box>[` with the first `]</box>` after it, when no newline comes between."""
  i, close = 0, -1
  while True:
    i = text.find("<box>[", i)
    if i < 0:
      return
    if close < i + 6:
      close = text.find("]</box>", i + 6)
      if close < 0:
        return
    newline = text.find("\n", i + 6, close)
    if newline >= 0:
      i = newline + 1  # every `<box>[` before this newline meets it before `]</box>`
      continue
    yield text[i + 5:close + 1]
    i = close + 7


def _is_word(c: str) -> bool:
  return c.isalnum() or c == "_"


def has_named_box(text: str) -> bool:
  """`NAMED_BOX_RE.search(text)` is not None: `<obj>WORD</obj><box>[..]</box>` with WORD one or
  more word characters (`\\w`: alphanumeric or `_`) and no newline inside the box."""
  k, close = text.find("</obj><box>["), -1
  while k >= 0:
    w = k
    while w > 0 and _is_word(text[w - 1]):
      w -= 1
    if w < k and w >= 5 and text.startswith("<obj>", w - 5):
      if close < k + 12:
        close = text.find("]</box>", k + 12)
        if close < 0:
          return False
      newline = text.find("\n", k + 12, close)
      if newline < 0:
        return True
      k = text.find("</obj><box>[", newline)  # every candidate before the newline meets it
      continue
    k = text.find("</obj><box>[", k + 1)
  return False


def _run_end(text: str, start: int, last_exit: int) -> int:
  """Where the box run of CLAIM_RE starting at `start` (at a `<box>[`) ends, as the regex's
  backtracking order decides: the greedy run takes another `<box>[` unit after each `]</box>`
  whenever some later `]</box>at<t>` can still close the claim (`last_exit`: the last such
  position followed by a `</t>s`), else stops at the first `]</box>` followed by `at<t>`."""
  i = text.find("]</box>", start + 6)
  while True:
    end = i + 7
    if text.startswith("<box>[", end) and end + 13 <= last_exit:
      i = text.find("]</box>", end + 6)  # the next unit's first possible end
      continue
    if text.startswith("at<t>", end) and end <= last_exit:
      return end
    i = text.find("]</box>", i + 1)


def claim_matches(text: str) -> Iterator[tuple[str, str, str]]:
  """The groups (name, box run, time) of `CLAIM_RE.finditer(text)`, in linear time.

  The regex itself backtracks through every `</obj>` and `]</box>` after each `<obj>` when no
  claim can close, which takes minutes on a few thousand `<obj>..</obj><box>[..]</box>` without
  `at<t>..</t>s`. Its result is decided by two facts this scanner uses directly: a box run
  starting at p can end at any `]</box>` at least 13 characters on, so a match exists iff some
  `]</box>at<t>` followed by a `</t>s` lies far enough ahead; and lazy / greedy priorities pick
  the first such ending in the order above. `tests/test_rewards_parsing.py` checks equality with
  the regex on random tag soups.
  """
  last_close = text.rfind("</t>s")
  exit_at = text.rfind("]</box>at<t>", 0, last_close) if last_close >= 0 else -1
  if exit_at < 0:
    return
  last_exit = exit_at + 7  # the last run end from which `at<t>..</t>s` can follow
  pos = 0
  while True:
    start = text.find("<obj>", pos)
    if start < 0:
      return
    name_end = text.find("</obj>", start + 5)  # the shortest name whose box run can close
    while 0 <= name_end and name_end + 19 <= last_exit and not text.startswith(
        "<box>[", name_end + 6):
      name_end = text.find("</obj>", name_end + 1)
    if name_end < 0 or name_end + 19 > last_exit:
      return  # no claim can start here, nor at any later `<obj>`
    run_end = _run_end(text, name_end + 6, last_exit)
    time_end = text.find("</t>s", run_end + 5)
    yield text[start + 5:name_end], text[name_end + 6:run_end], text[run_end + 5:time_end]
    pos = time_end + 5


def bracketed(text: str) -> list[str]:
  """`CLAIM_BOX_RE.findall(text)` in linear time: each `[` with the first `]` after it on the
  same line (the regex retries every `[` of a line that has no `]`)."""
  out = []
  i, close = 0, -1
  while True:
    i = text.find("[", i)
    if i < 0:
      return out
    if close <= i:
      close = text.find("]", i + 1)
      if close < 0:
        return out
    newline = text.find("\n", i + 1, close)
    if newline >= 0:
      i = newline + 1  # no `[` before this newline has a `]` on its line
      continue
    out.append(text[i:close + 1])
    i = close + 1


