"""Register decoding against byte vectors from meter manuals, and encode/decode round trips.

Every vector runs through both decoders: the general `decode` and the one a poll uses,
made once per data type and order (`decoder`); a property test holds them equal on any
words, wrong ones included.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.modbus.decode import ByteOrder, DataType, DecodeError, decode, decoder, encode

A, B, C, D = ByteOrder.ABCD, ByteOrder.BADC, ByteOrder.CDAB, ByteOrder.DCBA

Decode = Callable[..., int | float | bool]


def _made_once(
    registers: Sequence[int], dtype: DataType, order: ByteOrder = A, bit: int | None = None
) -> int | float | bool:
    return decoder(dtype, order, bit)(registers)


both = pytest.mark.parametrize("decode_", [decode, _made_once], ids=["general", "made-once"])


@pytest.mark.parametrize(
    ("registers", "dtype", "order", "expected"),
    [
        # 230.2 V as a CHINT DDSU666 sends it (reply 01 04 04 43 66 33 34 ...).
        ([0x4366, 0x3334], DataType.FLOAT32, A, struct.unpack(">f", bytes.fromhex("43663334"))[0]),
        # 1.2345678 as a flow meter that stores the low word first sends it: 06 51 3F 9E.
        ([0x0651, 0x3F9E], DataType.FLOAT32, C, struct.unpack(">f", bytes.fromhex("3f9e0651"))[0]),
        ([0x6643, 0x3433], DataType.FLOAT32, B, struct.unpack(">f", bytes.fromhex("43663334"))[0]),
        ([0x3433, 0x6643], DataType.FLOAT32, D, struct.unpack(">f", bytes.fromhex("43663334"))[0]),
        ([0x4248, 0x0000], DataType.FLOAT32, A, 50.0),
        ([0x3FF0, 0, 0, 0], DataType.FLOAT64, A, 1.0),
        ([0, 0, 0, 0x3FF0], DataType.FLOAT64, C, 1.0),
        ([0xFF38], DataType.INT16, A, -200),
        ([0xFF38], DataType.UINT16, A, 65336),
        ([0x38FF], DataType.INT16, D, -200),
        ([0x38FF], DataType.INT16, B, -200),
        ([0xFF38], DataType.INT16, C, -200),  # one word: CDAB has no words to swap
        ([0xFFFF, 0xFFFE], DataType.INT32, A, -2),
        ([0xFFFE, 0xFFFF], DataType.INT32, C, -2),
        ([0x1234, 0x5678], DataType.UINT32, A, 0x12345678),
        ([0x5678, 0x1234], DataType.UINT32, C, 0x12345678),
        ([0x3412, 0x7856], DataType.UINT32, B, 0x12345678),
        ([0x7856, 0x3412], DataType.UINT32, D, 0x12345678),
        ([0x0000, 0x0000, 0x0001, 0x0000], DataType.INT64, A, 65536),
        ([0x0000, 0x0001, 0x0000, 0x0000], DataType.INT64, C, 65536),
        ([0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], DataType.INT64, A, -1),
        ([0x0807, 0x0605, 0x0403, 0x0201], DataType.UINT64, D, 0x0102030405060708),
        ([0x0201, 0x0403, 0x0605, 0x0807], DataType.UINT64, B, 0x0102030405060708),
        ([0x1234], DataType.BCD16, A, 1234),
        ([0x3412], DataType.BCD16, B, 1234),
        ([0x0012, 0x3456], DataType.BCD32, A, 123456),
        ([0x3456, 0x0012], DataType.BCD32, C, 123456),
        ([0x9999, 0x9999], DataType.BCD32, A, 99999999),
    ],
)
@both
def test_decode_vectors(
    decode_: Decode, registers: list[int], dtype: DataType, order: ByteOrder, expected: float
) -> None:
    assert decode_(registers, dtype, order) == expected


@pytest.mark.parametrize(
    ("word", "bit", "order", "expected"),
    [
        (0x0800, 11, A, True),  # Notifier-style zone word: bit 11 "active"
        (0x0800, 10, A, False),
        (0x0001, 0, A, True),
        (0x8000, 15, A, True),
        (0x0008, 11, B, True),  # the same bit from a meter that swaps bytes
    ],
)
@both
def test_bit_of_a_register(
    decode_: Decode, word: int, bit: int, order: ByteOrder, expected: bool
) -> None:
    assert decode_([word], DataType.BIT, order, bit=bit) is expected


@both
def test_bool_is_one_coil(decode_: Decode) -> None:
    assert decode_([1], DataType.BOOL) is True
    assert decode_([0], DataType.BOOL) is False


@pytest.mark.parametrize(
    ("registers", "dtype", "bit", "message"),
    [
        ([0x12A4], DataType.BCD16, None, "not BCD: digit A"),
        ([0x4366], DataType.FLOAT32, None, "float32 takes 2 registers, got 1"),
        ([0x1, 0x2, 0x3], DataType.UINT32, None, "uint32 takes 2 registers, got 3"),
        ([0x10000], DataType.UINT16, None, "not a 16-bit word"),
        ([-1], DataType.INT16, None, "not a 16-bit word"),
        ([0x0001], DataType.BIT, None, "bit needs a bit number"),
        ([0x0001], DataType.BIT, 16, "bit needs a bit number"),
        ([1, 0], DataType.BOOL, None, "bool takes one bit"),
    ],
)
@both
def test_decode_refuses_what_cannot_be_a_value(
    decode_: Decode, registers: list[int], dtype: DataType, bit: int | None, message: str
) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_(registers, dtype, bit=bit)


@both
def test_nan_comes_back_for_the_caller_to_judge(decode_: Decode) -> None:
    assert math.isnan(float(decode_([0x7FC0, 0x0000], DataType.FLOAT32)))


def test_encode_refuses_values_that_do_not_fit() -> None:
    with pytest.raises(DecodeError):
        encode(70000, DataType.INT16)
    with pytest.raises(DecodeError):
        encode(10000, DataType.BCD16)


orders = st.sampled_from(list(ByteOrder))
_INT_RANGES = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT64: (0, 2**64 - 1),
    DataType.BCD16: (0, 9999),
    DataType.BCD32: (0, 99_999_999),
}


@given(data=st.data(), dtype=st.sampled_from(list(_INT_RANGES)), order=orders)
def test_integers_round_trip(data: st.DataObject, dtype: DataType, order: ByteOrder) -> None:
    lo, hi = _INT_RANGES[dtype]
    value = data.draw(st.integers(lo, hi))
    registers = encode(value, dtype, order)
    assert len(registers) == dtype.registers
    assert all(0 <= r <= 0xFFFF for r in registers)
    assert decode(registers, dtype, order) == value


@given(value=st.floats(allow_nan=False, width=32), order=orders)
def test_float32_round_trips(value: float, order: ByteOrder) -> None:
    assert decode(encode(value, DataType.FLOAT32, order), DataType.FLOAT32, order) == value


@given(value=st.floats(allow_nan=False), order=orders)
def test_float64_round_trips(value: float, order: ByteOrder) -> None:
    assert decode(encode(value, DataType.FLOAT64, order), DataType.FLOAT64, order) == value


@given(registers=st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=2), order=orders)
def test_any_words_decoded_and_encoded_again_are_the_same_words(
    registers: list[int], order: ByteOrder
) -> None:
    value = decode(registers, DataType.UINT32, order)
    assert encode(value, DataType.UINT32, order) == registers


def _outcome(decode_: Decode, registers: list[int], dtype: DataType, order: ByteOrder) -> object:
    try:
        value = decode_(registers, dtype, order, bit=3)
    except DecodeError as exc:
        return ("refused", str(exc))
    return struct.pack(">d", value) if isinstance(value, float) else value  # NaN == NaN


@given(
    registers=st.lists(st.integers(-2, 0x10001), max_size=5),
    dtype=st.sampled_from(list(DataType)),
    order=orders,
)
def test_the_decoder_made_once_is_the_general_decode(
    registers: list[int], dtype: DataType, order: ByteOrder
) -> None:
    assert _outcome(_made_once, registers, dtype, order) == _outcome(
        decode, registers, dtype, order
    )
