"""Piece arithmetic: worked examples, then a model check against a byte array.

Method: splice/clip/covering are pure; a hypothesis test applies random writes and
truncates both to a piece list and to a plain bytearray and compares the bytes.
"""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from objfs.store.pieces import clip, covering, splice
from objfs.store.types import Piece


def materialise(pieces: tuple[Piece, ...], size: int) -> bytes:
    out = bytearray(size)
    for start, end, piece in covering(pieces, 0, size):
        if piece is None:
            continue
        assert isinstance(piece.source, bytes)
        skip = piece.source_offset_bytes + (start - piece.offset_bytes)
        out[start:end] = piece.source[skip : skip + end - start]
    return bytes(out)


def test_splice_into_the_middle_cuts_the_old_piece_in_two() -> None:
    old = (Piece(0, 10, b"abcdefghij"),)
    new = splice(old, [Piece(3, 2, b"XY")])
    assert [(p.offset_bytes, p.length_bytes, p.source_offset_bytes) for p in new] == [
        (0, 3, 0),
        (3, 2, 0),
        (5, 5, 5),
    ]
    assert materialise(new, 10) == b"abcXYfghij"


def test_clip_keeps_object_coordinates_and_moves_the_source_offset() -> None:
    [piece] = clip((Piece(100, 100, bytes(range(100))),), 150, 400)
    assert (piece.offset_bytes, piece.length_bytes, piece.source_offset_bytes) == (150, 50, 50)


def test_covering_reports_holes_as_none() -> None:
    pieces = (Piece(2, 2, b"ab"), Piece(6, 1, b"c"))
    runs = [(s, e, p is not None) for s, e, p in covering(pieces, 0, 8)]
    assert runs == [(0, 2, False), (2, 4, True), (4, 6, False), (6, 7, True), (7, 8, False)]


def test_covering_starts_inside_a_piece() -> None:
    pieces = (Piece(0, 10, b"0123456789"),)
    assert materialise(clip(pieces, 0, 10), 10) == b"0123456789"
    [(start, end, piece)] = list(covering(pieces, 4, 6))
    assert (start, end, piece) == (4, 6, pieces[0])


operations = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 200), st.binary(min_size=1, max_size=40)),
        st.tuples(st.just("truncate"), st.integers(0, 240), st.just(b"")),
    ),
    max_size=30,
)


@given(operations)
@settings(max_examples=300, deadline=None)
def test_random_writes_and_truncates_match_a_byte_array(ops: list[tuple[str, int, bytes]]) -> None:
    model = bytearray()
    pieces: tuple[Piece, ...] = ()
    for kind, offset, data in ops:
        if kind == "write":
            if offset > len(model):
                model.extend(bytes(offset - len(model)))
            model[offset : offset + len(data)] = data
            pieces = splice(pieces, [Piece(offset, len(data), data)])
        else:
            del model[offset:]
            model.extend(bytes(offset - len(model)))
            pieces = clip(pieces, 0, offset)
        ends = [p.offset_bytes for p in pieces]
        assert ends == sorted(ends)
        assert all(a.end_bytes <= b.offset_bytes for a, b in pairwise(pieces))
        assert materialise(pieces, len(model)) == bytes(model)
