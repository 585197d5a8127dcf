"""objfs.store.pieces — pure arithmetic on piece lists: clip, splice, find.

An object's bytes are a sorted list of non-overlapping pieces; bytes no piece
covers read as zeros. Writing in place and truncating only cut and re-reference
existing pieces: no stored byte is copied. No I/O here.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import replace
from itertools import pairwise

from objfs.store.types import Piece


def _cut(piece: Piece, start_bytes: int, end_bytes: int) -> Piece | None:
    """The part of `piece` inside [start, end), or None.

    Example: a piece at [100, 200) from source offset 0, cut to [150, 400),
    is the piece at [150, 200) from source offset 50.
    """
    start = max(piece.offset_bytes, start_bytes)
    end = min(piece.end_bytes, end_bytes)
    if start >= end:
        return None
    if start == piece.offset_bytes and end == piece.end_bytes:
        return piece
    return replace(
        piece,
        offset_bytes=start,
        length_bytes=end - start,
        source_offset_bytes=piece.source_offset_bytes + (start - piece.offset_bytes),
    )


def clip(pieces: Sequence[Piece], start_bytes: int, end_bytes: int) -> tuple[Piece, ...]:
    """The pieces, cut to [start, end) (object coordinates are kept)."""
    result = []
    for piece in pieces:
        cut = _cut(piece, start_bytes, end_bytes)
        if cut is not None:
            result.append(cut)
    return tuple(result)


def splice(pieces: Sequence[Piece], new_pieces: Sequence[Piece]) -> tuple[Piece, ...]:
    """Lay `new_pieces` over `pieces`: new bytes win wherever both cover a range
    (and, among new pieces that overlap, the later in offset order).

    One pass over both lists, O(len(pieces) + len(new_pieces)): a write of
    thousands of runs into a file of thousands of pieces is one record.
    """
    news = sorted(new_pieces, key=lambda piece: piece.offset_bytes)
    if any(a.end_bytes > b.offset_bytes for a, b in pairwise(news)):
        news = list(_lay_each(news[:1], news[1:]))  # overlapping new pieces: rare
    kept: list[Piece] = []
    first = 0  # the first new piece that ends after the current old piece starts
    for piece in pieces:
        while first < len(news) and news[first].end_bytes <= piece.offset_bytes:
            first += 1
        cursor = piece.offset_bytes
        index = first
        while index < len(news) and news[index].offset_bytes < piece.end_bytes:
            before = _cut(piece, cursor, news[index].offset_bytes)
            if before is not None:
                kept.append(before)
            cursor = max(cursor, news[index].end_bytes)
            index += 1
        rest = _cut(piece, cursor, piece.end_bytes)
        if rest is not None:
            kept.append(rest)
    return tuple(heapq.merge(kept, news, key=lambda piece: piece.offset_bytes))


def _lay_each(pieces: list[Piece], new_pieces: list[Piece]) -> tuple[Piece, ...]:
    """Lay new pieces one at a time (each over all before it)."""
    result = tuple(pieces)
    for new in new_pieces:
        result = splice(result, [new])
    return result


def covering(
    pieces: Sequence[Piece], start_bytes: int, end_bytes: int
) -> Iterator[tuple[int, int, Piece | None]]:
    """Walk [start, end) as runs: (run_start, run_end, piece or None for a hole).

    Pieces must be sorted and must not overlap.
    """
    starts = [piece.offset_bytes for piece in pieces]
    position = start_bytes
    index = max(bisect_right(starts, start_bytes) - 1, 0)
    while position < end_bytes:
        while index < len(pieces) and pieces[index].end_bytes <= position:
            index += 1
        if index == len(pieces) or pieces[index].offset_bytes >= end_bytes:
            yield position, end_bytes, None
            return
        piece = pieces[index]
        if piece.offset_bytes > position:
            yield position, piece.offset_bytes, None
            position = piece.offset_bytes
        run_end = min(piece.end_bytes, end_bytes)
        yield position, run_end, piece
        position = run_end
