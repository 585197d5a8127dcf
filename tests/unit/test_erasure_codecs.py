"""objfs.store.erasure: the policy a node chooses, and codecs that give back every byte.

Goal: the documented default shapes hold; every config mistake is refused with
a ConfigError that names the key to fix (store.ec_policy or store.ec_backend);
and every codec the store can use turns any k of its k+m fragments back into
the segment's exact bytes and rebuilds the missing fragments byte for byte,
while fewer than k is Corrupted, never a guess.

Method: pure calls, no I/O. Payloads are seeded random bytes of sizes from one
byte to a few MiB, most not a multiple of k. For small widths every pattern of
m missing fragments is tried; for 8+5 (1287 patterns) a seeded sample of them.
"""

from __future__ import annotations

import itertools
import random

import crc32c
import pytest

from objfs.errors import ConfigError, Corrupted
from objfs.store import erasure
from objfs.store.erasure import (
    SCHEME_ISA_L_RS_CAUCHY,
    SCHEME_ISA_L_RS_VAND,
    SCHEME_LIBERASURECODE_RS_VAND,
    SCHEME_REPLICAS,
    Policy,
    choose_policy,
    default_shape,
)

MiB = 1024 * 1024
SIZES = [1, 2, 3, 4095, 65_537, 1 * MiB + 3, 3 * MiB + 5]


@pytest.mark.parametrize(
    ("device_count", "shape"),
    [(1, (1, 0)), (2, (1, 1)), (3, (2, 1)), (4, (2, 2)), (5, (3, 2)), (6, (4, 2)), (7, (4, 2)),
     (12, (4, 2)), (64, (4, 2))],
)  # fmt: skip
def test_default_shape_follows_the_documented_table(
    device_count: int, shape: tuple[int, int]
) -> None:
    """1: 1+0, 2: 1+1, 3: 2+1, 4: 2+2, 5: 3+2, and 4+2 from six devices on; "auto"
    gives that shape, with whole copies for k=1 and ISA-L Vandermonde otherwise."""
    assert default_shape(device_count) == shape
    policy = choose_policy("auto", "auto", device_count)
    assert (policy.data_fragments, policy.parity_fragments) == shape
    assert policy.scheme == (SCHEME_REPLICAS if shape[0] == 1 else SCHEME_ISA_L_RS_VAND)
    assert policy.width == sum(shape)
    assert policy.write_quorum == shape[0]


def test_default_shape_refuses_a_node_without_devices() -> None:
    """Zero devices is a caller's bug, not a shape."""
    with pytest.raises(ValueError, match="at least one device"):
        default_shape(0)


def test_policy_describes_itself_with_shape_and_scheme() -> None:
    """What logs and `objfs status` print for a policy."""
    assert choose_policy("4+2", "auto", 6).describe() == "4+2 (isa_l_rs_vand)"
    assert choose_policy("1+2", "auto", 3).describe() == "1+2 (replicas)"
    assert choose_policy("8+5", "auto", 13).describe() == "8+5 (isa_l_rs_cauchy)"


@pytest.mark.parametrize("shape", ["4-2", "4+", "+2", "four+two", "4+2+1", "", "4 + 2", "x4+2"])
def test_malformed_shape_is_refused_naming_store_ec_policy(shape: str) -> None:
    """Anything but "auto" or "K+M" is refused with the key and the expected form."""
    with pytest.raises(ConfigError, match=r'^store\.ec_policy: .*"K\+M"'):
        choose_policy(shape, "auto", 6)


@pytest.mark.parametrize(
    ("shape", "device_count", "says"),
    [
        ("0+2", 6, "at least one data fragment"),
        ("2+0", 6, "no parity"),
        ("4+0", 6, "no parity"),
        ("4+2", 5, "needs 6 devices .* has 5"),
        ("2+2", 3, "needs 4 devices .* has 3"),
    ],
)
def test_shape_that_does_not_fit_is_refused_naming_store_ec_policy(
    shape: str, device_count: int, says: str
) -> None:
    """No data fragment, k>1 without parity, or more fragments than devices:
    refused, naming the key and why."""
    with pytest.raises(ConfigError, match=rf"^store\.ec_policy: .*{says}"):
        choose_policy(shape, "auto", device_count)


def test_shape_wider_than_a_stripe_may_be_names_the_fragment_limit() -> None:
    """On a node with enough devices, a shape of more than 32 fragments is refused
    for the stripe limit, and the message says so (not that devices are lacking)."""
    with pytest.raises(ConfigError, match=r"^store\.ec_policy: 20\+13 .*33 fragments.* 32"):
        choose_policy("20+13", "auto", 64)


def test_single_copy_and_mirrors_need_no_parity_or_backend() -> None:
    """1+0 on one device and 1+M keep whole copies: no pyeclib scheme."""
    assert choose_policy("1+0", "auto", 1) == Policy(1, 0, SCHEME_REPLICAS)
    assert choose_policy("1+2", "replicas", 5) == Policy(1, 2, SCHEME_REPLICAS)


@pytest.mark.parametrize(
    ("shape", "backend", "device_count", "says"),
    [
        ("4+2", "jerasure_rs_vand", 6, "'jerasure_rs_vand' is not one of auto, isa_l_rs_vand"),
        ("4+2", "ISA_L_RS_VAND", 6, "is not one of"),
        ("1+1", "isa_l_rs_vand", 2, "whole copies; it takes no backend"),
        ("8+5", "isa_l_rs_vand", 13, "cannot decode every loss of 5 .* isa_l_rs_cauchy"),
        ("8+5", "liberasurecode_rs_vand", 13, "cannot decode every loss of 5"),
    ],
)
def test_unusable_backend_is_refused_naming_store_ec_backend(
    shape: str, backend: str, device_count: int, says: str
) -> None:
    """An unknown backend, a backend for whole copies, or Vandermonde with more than
    four parity fragments (not every loss pattern decodes): refused, naming the key."""
    with pytest.raises(ConfigError, match=rf"^store\.ec_backend: .*{says}"):
        choose_policy(shape, backend, device_count)


@pytest.mark.parametrize(
    ("shape", "device_count", "scheme"),
    [
        ("4+4", 8, SCHEME_ISA_L_RS_VAND),  # four parity: Vandermonde still decodes all
        ("4+5", 9, SCHEME_ISA_L_RS_CAUCHY),
        ("8+5", 13, SCHEME_ISA_L_RS_CAUCHY),
        ("10+8", 18, SCHEME_ISA_L_RS_CAUCHY),
    ],
)
def test_auto_backend_takes_cauchy_above_four_parity_fragments(
    shape: str, device_count: int, scheme: int
) -> None:
    """ "auto" picks Cauchy where Vandermonde could meet an undecodable loss (m > 4)."""
    assert choose_policy(shape, "auto", device_count).scheme == scheme


def test_named_backends_are_taken_as_given() -> None:
    """A backend named in the config is used, Cauchy also for few parity fragments."""
    assert choose_policy("4+2", "liberasurecode_rs_vand", 6).scheme == (
        SCHEME_LIBERASURECODE_RS_VAND
    )
    assert choose_policy("4+2", "isa_l_rs_cauchy", 6).scheme == SCHEME_ISA_L_RS_CAUCHY
    assert choose_policy("2+1", "isa_l_rs_vand", 3).scheme == SCHEME_ISA_L_RS_VAND


def test_codec_for_an_unknown_or_inconsistent_stored_scheme_is_corrupted() -> None:
    """A segment recording a scheme this code does not know, or whole copies with
    k>1, cannot be decoded here: Corrupted (the segment is unreadable), not a crash."""
    with pytest.raises(Corrupted, match="unknown erasure scheme 99"):
        erasure.codec(99, 4, 2)
    with pytest.raises(Corrupted, match="one data fragment"):
        erasure.codec(SCHEME_REPLICAS, 2, 1)


CODECS = [
    (SCHEME_REPLICAS, 1, 1),
    (SCHEME_REPLICAS, 1, 2),
    (SCHEME_ISA_L_RS_VAND, 2, 1),
    (SCHEME_ISA_L_RS_VAND, 4, 2),
    (SCHEME_ISA_L_RS_CAUCHY, 8, 5),
    (SCHEME_LIBERASURECODE_RS_VAND, 4, 2),
]


def codec_id(shape: tuple[int, int, int]) -> str:
    scheme, k, m = shape
    return f"{erasure.SCHEME_NAMES[scheme]}-{k}+{m}"


def missing_patterns(width: int, parity: int, rng: random.Random) -> list[tuple[int, ...]]:
    """Every way to lose `parity` of `width` fragments, or 12 of them when there are more."""
    patterns = list(itertools.combinations(range(width), parity))
    return patterns if len(patterns) <= 20 else rng.sample(patterns, 12)


@pytest.mark.parametrize("shape", CODECS, ids=codec_id)
def test_codec_round_trips_with_any_m_fragments_missing(shape: tuple[int, int, int]) -> None:
    """Encode gives k+m fragments (all as long as fragment_bytes says, each with its
    CRC32C); from any k of them decode gives the exact bytes back and reconstruct
    gives the missing fragments byte-identical to the ones encode made."""
    scheme, k, m = shape
    codec = erasure.codec(scheme, k, m)
    rng = random.Random(f"{scheme}-{k}-{m}")
    for size in SIZES:
        data = rng.randbytes(size)
        fragments, crcs = erasure.encode_with_checksums(codec, data)
        assert len(fragments) == k + m
        assert crcs == [crc32c.crc32c(fragment) for fragment in fragments]
        if isinstance(codec, erasure.PyECLib):
            assert {len(fragment) for fragment in fragments} == {codec.fragment_bytes(size)}
        else:
            assert fragments == [data] * (k + m)
        for missing in missing_patterns(k + m, m, rng):
            left = {i: fragments[i] for i in range(k + m) if i not in missing}
            assert codec.decode(left, size) == data, (size, missing)
            rebuilt = codec.reconstruct(left, list(missing))
            assert rebuilt == [fragments[i] for i in missing], (size, missing)


@pytest.mark.parametrize("shape", CODECS, ids=codec_id)
def test_codec_with_fewer_than_k_fragments_is_corrupted(shape: tuple[int, int, int]) -> None:
    """One fragment short of k, decode and reconstruct raise Corrupted."""
    scheme, k, m = shape
    codec = erasure.codec(scheme, k, m)
    data = random.Random(5).randbytes(100_003)
    fragments = codec.encode(data)
    left = {i: fragments[i] for i in range(m + 1, k + m)}  # m + 1 lost: k - 1 left
    assert len(left) == k - 1
    with pytest.raises(Corrupted):
        codec.decode(left, len(data))
    with pytest.raises(Corrupted):
        codec.reconstruct(left, list(range(m + 1)))


@pytest.mark.parametrize("size", [1, 4095, 4096, 4097, 65_536 * 4, 65_536 * 4 + 1, 1 * MiB])
def test_fragment_bytes_matches_what_encode_makes(size: int) -> None:
    """The data path sizes extents with fragment_bytes before it encodes: the two
    must agree for every scheme and size."""
    data = bytes(size)
    for scheme, k, m in CODECS[2:]:
        codec = erasure.codec(scheme, k, m)
        assert isinstance(codec, erasure.PyECLib)
        assert [len(f) for f in codec.encode(data)] == [codec.fragment_bytes(size)] * (k + m)
