"""Prefix trees of token sequences: what shared-prefix scoring (``shared_prefix.py``) shares,
and the floor it is measured against."""

from __future__ import annotations


def common_prefix(seqs: list[tuple[int, ...]]) -> int:
    """Length of the longest prefix all of ``seqs`` share."""
    if not seqs:
        return 0
    n = min(len(s) for s in seqs)
    first = seqs[0]
    for i in range(n):
        t = first[i]
        if any(s[i] != t for s in seqs):
            return i
    return n


def distinct_positions(seqs: set[tuple[int, ...]]) -> int:
    """Token positions of the prefix tree of ``seqs``: what must run at least to compute
    every position of every sequence once."""
    total, prev = 0, ()
    for s in sorted(seqs):
        total += len(s) - common_prefix([prev, s])
        prev = s
    return total


def prefix_groups(prompts: list[tuple[int, ...]], min_shared: int) -> list[tuple[int, ...]]:
    """The prefixes that groups of at least two ``prompts`` share, ``min_shared`` tokens or
    more (each leaves at least one token of each prompt to run): consecutive prompts in
    sorted order sharing ``min_shared`` tokens with the group's first form a group."""
    uniq = sorted(set(prompts))
    out: list[tuple[int, ...]] = []
    i = 0
    while i < len(uniq):
        j = i + 1
        while j < len(uniq) and common_prefix([uniq[i][:min_shared], uniq[j]]) >= min_shared:
            j += 1
        if j - i >= 2:
            n = min(common_prefix([uniq[i], uniq[j - 1]]), *(len(u) - 1 for u in uniq[i:j]))
            if n >= min_shared:
                out.append(uniq[i][:n])
        i = j
    return out
