"""``Money``: the arithmetic laws (hypothesis), what it refuses at run time, and what
``mypy --strict`` refuses (a snippet checked through mypy's own API)."""

from __future__ import annotations

import copy
import pickle
import textwrap
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mypy import api

from callscaler_async import Money

cents = st.integers(min_value=-(10**15), max_value=10**15)
moneys = st.builds(Money, cents)
factors = st.integers(min_value=-(10**6), max_value=10**6)
divisors = factors.filter(lambda n: n != 0)


@given(moneys, moneys, moneys)
def test_addition_is_a_commutative_group(a: Money, b: Money, c: Money) -> None:
    zero = Money(0)
    assert a + b == b + a
    assert (a + b) + c == a + (b + c)
    assert a + zero == a == zero + a
    assert a + (-a) == zero
    assert a - b == a + (-b)
    assert -a + a == zero and +a == a and a == -(a * -1)


@given(moneys, moneys, factors, factors)
def test_multiplication_by_int_distributes(a: Money, b: Money, n: int, k: int) -> None:
    assert a * n == n * a
    assert (a + b) * n == a * n + b * n
    assert a * (n + k) == a * n + a * k
    assert (a * n) * k == a * (n * k)
    assert a * 1 == a and a * 0 == Money(0) and a * -1 == -a


@given(st.lists(moneys, max_size=20))
def test_sum_matches_the_cents(items: list[Money]) -> None:
    assert sum(items, Money(0)) == Money(sum(m.cents for m in items))
    if items:
        assert sum(items) == Money(sum(m.cents for m in items))
    else:
        assert sum(items) == 0  # sum() of nothing is its start, the int 0


@given(moneys, moneys)
def test_order_is_the_order_of_the_cents(a: Money, b: Money) -> None:
    assert (a < b) == (a.cents < b.cents)
    assert (a <= b) == (a.cents <= b.cents)
    assert (a > b) == (a.cents > b.cents)
    assert (a >= b) == (a.cents >= b.cents)
    assert (a == b) == (a.cents == b.cents)
    assert abs(a) >= Money(0) and abs(a) in (a, -a)
    assert bool(a) == (a.cents != 0)


@given(moneys, st.integers(min_value=1, max_value=500))
def test_allocate_adds_up_exactly(a: Money, n: int) -> None:
    parts = a.allocate(n)
    assert len(parts) == n
    assert sum(parts, Money(0)) == a
    assert max(p.cents for p in parts) - min(p.cents for p in parts) <= 1
    # A negative amount splits like its opposite.
    assert (-a).allocate(n) == [-p for p in parts]


@given(moneys, st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=20))
def test_allocate_by_ratios_adds_up_and_follows_them(a: Money, ratios: list[int]) -> None:
    if sum(ratios) == 0:
        with pytest.raises(ValueError, match="zero"):
            a.allocate(ratios)
        return
    parts = a.allocate(ratios)
    assert sum(parts, Money(0)) == a
    total = sum(ratios)
    for part, ratio in zip(parts, ratios, strict=True):
        exact = Decimal(abs(a.cents)) * ratio / total
        assert abs(Decimal(abs(part.cents)) - exact) < 1  # off by less than a cent
        if ratio == 0:
            assert part == Money(0)


@pytest.mark.parametrize(
    ("amount", "ratios", "cents"),
    [
        # An exact share gets no left-over cent (this gave 6, 2, 2 and 5487, ...).
        (10, [2, 1, 1], [5, 3, 2]),
        (52117, [160, 360, 1000], [5486, 12344, 34287]),
        (-10, [2, 1, 1], [-5, -3, -2]),
        (100, [1, 1, 1], [34, 33, 33]),  # equal remainders: the first parts
        (5, [0, 1, 0, 1], [0, 3, 0, 2]),
        (1, [3, 3, 0], [1, 0, 0]),
    ],
)
def test_allocate_gives_the_left_over_cents_to_the_parts_rounded_down_most(
    amount: int, ratios: list[int], cents: list[int]
) -> None:
    assert Money(amount).allocate(ratios) == [Money(c) for c in cents]


@given(moneys, divisors)
def test_division_is_the_nearest_cent_ties_to_even(a: Money, n: int) -> None:
    quotient = (a / n).cents
    with localcontext() as ctx:
        ctx.prec = 60
        exact = Decimal(a.cents) / Decimal(n)
        assert quotient == int(exact.quantize(Decimal(1), rounding="ROUND_HALF_EVEN"))
    assert abs(quotient * n - a.cents) * 2 <= abs(n)


def test_division_rounding_examples() -> None:
    assert Money(5) / 2 == Money(2)  # 2.5 -> 2 (even)
    assert Money(7) / 2 == Money(4)  # 3.5 -> 4 (even)
    assert Money(-5) / 2 == Money(-2)
    assert Money(100) / 3 == Money(33)
    assert Money(100) / -3 == Money(-33)
    with pytest.raises(ZeroDivisionError):
        Money(1) / 0


@given(moneys, st.integers(min_value=-6, max_value=4))
def test_round_is_decimal_rounding_half_even(a: Money, ndigits: int) -> None:
    expected = round(a.amount, ndigits)  # Decimal rounds half-even, exactly
    assert round(a, ndigits).amount == expected
    assert round(a) == round(a, 0)
    if ndigits >= 2:
        assert round(a, ndigits) == a


@given(moneys, st.integers(min_value=-40, max_value=-5))
def test_round_to_beyond_the_amount_is_decimal_rounding(a: Money, ndigits: int) -> None:
    # Across the point where the step outgrows the amount (|amount| < 10 ** 13 here).
    with localcontext() as ctx:
        ctx.prec = 100
        assert round(a, ndigits).amount == round(a.amount, ndigits)
    if ndigits < -13:
        assert round(a, ndigits) == Money(0)


def test_round_with_a_huge_negative_ndigits_answers_at_once() -> None:
    # The suite's timeout is what fails if 10 ** (10 ** 9) is computed.
    assert round(Money(-(10**15), "EUR"), -(10**9)) == Money(0, "EUR")


@given(moneys)
def test_amount_and_from_amount_round_trip(a: Money) -> None:
    assert a.amount == Decimal(a.cents) / 100
    assert Money.from_amount(a.amount) == a
    assert Money.from_amount(str(a.amount)) == a
    assert Money.from_amount(format(a.amount, "f")) == a


def test_from_amount_is_exact_beyond_the_decimal_context() -> None:
    big = "123456789012345678901234567890.12"
    with localcontext() as ctx:
        ctx.prec = 10
        m = Money.from_amount(big)
        assert m.cents == 12345678901234567890123456789012
        assert str(m.amount) == big
    with pytest.raises(ValueError, match="fraction of a cent"):
        Money.from_amount("1" * 40 + ".001")


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        ("0e-999999999", Money(0)),  # zero whatever its exponent
        ("-0.00", Money(0)),
        ("1.2300000000", Money(123)),  # trailing zeros are not a fraction of a cent
        ("12e-1", Money(120)),
        ("1e3", Money(100_000)),
    ],
)
def test_from_amount_reads_the_exponent(amount: str, expected: Money) -> None:
    assert Money.from_amount(amount) == expected


@pytest.mark.parametrize(
    ("amount", "refused"),
    [
        # Valid Decimals whose exponent alone would take 10 ** 999999997: refused at once
        # (the suite's timeout is what fails if they are computed).
        ("1e-999999999", "fraction of a cent"),
        (Decimal("-5E-999999999"), "fraction of a cent"),
        ("1e999999999", "more than 4300 digits"),
        ("9" * 4299 + "e3", "more than 4300 digits"),
    ],
)
def test_from_amount_refuses_extreme_exponents_without_computing_them(
    amount: str | Decimal, refused: str
) -> None:
    with pytest.raises(ValueError, match=refused):
        Money.from_amount(amount)


@given(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.integers(min_value=-40, max_value=40),
)
def test_from_amount_is_the_exact_value_of_any_decimal(coefficient: int, exponent: int) -> None:
    value = Decimal(f"{coefficient}e{exponent}")  # exact: no context rounding
    with localcontext() as ctx:
        ctx.prec = 200
        cents = value * 100
        if cents == cents.to_integral_value():
            assert Money.from_amount(value) == Money(int(cents))
        else:
            with pytest.raises(ValueError, match="fraction of a cent"):
                Money.from_amount(value)


@pytest.mark.parametrize("convert", [int, float, complex, range, hex, Decimal])
def test_no_implicit_numeric_conversion(convert: Any) -> None:
    with pytest.raises(TypeError):
        convert(Money(125))
    with pytest.raises(TypeError):
        [1, 2, 3][Money(1)]  # type: ignore[call-overload]


@pytest.mark.parametrize(
    "operation",
    [
        lambda m: m + 1.5,
        lambda m: 1.5 + m,
        lambda m: m + 1,
        lambda m: 1 + m,
        lambda m: m * m,
        lambda m: m * 1.5,
        lambda m: m * True,
        lambda m: m / 2.0,
        lambda m: m / m,
        lambda m: m < 1,
        lambda m: m - Decimal(1),
    ],
)
def test_mixed_operations_are_type_errors(operation: Any) -> None:
    with pytest.raises(TypeError):
        operation(Money(125))


def test_constructor_takes_cents_and_names_from_amount() -> None:
    assert Money(125) == Money.from_cents(125) == Money(cents=125) == Money.from_amount("1.25")
    for wrong in ("1.25", 1.25, Decimal("1.25")):
        with pytest.raises(TypeError, match=r"Money.from_amount"):
            Money(wrong)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Money(True)
    with pytest.raises(ValueError, match="EUR"):
        Money(1) + Money(1, "EUR")
    with pytest.raises(ValueError):
        Money(1).allocate(0)


def test_value_semantics() -> None:
    m = Money(1999, "EUR")
    assert pickle.loads(pickle.dumps(m)) == m
    assert copy.deepcopy(m) == m and hash(m) == hash(Money(1999, "EUR"))
    assert repr(m) == "Money(cents=1999, currency='EUR')" and str(m) == "19.99 EUR"
    assert repr(Money(83)) == "Money(cents=83)" and str(Money(83)) == "$0.83"
    assert f"{Money(83)}" == "$0.83"


# -- what mypy --strict says ----------------------------------------------------------------

_ACCEPTED = """
from decimal import Decimal
from typing import Literal, assert_type
from callscaler_async import Money

m = Money(125)
assert_type(m + m, Money)
assert_type(m - m, Money)
assert_type(m * 3, Money)
assert_type(3 * m, Money)
assert_type(m / 3, Money)
assert_type(-m, Money)
assert_type(abs(m), Money)
assert_type(round(m), Money)
assert_type(round(m, 1), Money)
assert_type(m.allocate(3), list[Money])
assert_type(sum([m, m], Money(0)), Money)
assert_type(sum([m, m]), Money | Literal[0])
assert_type(m < m, bool)
assert_type(m.cents, int)
assert_type(m.amount, Decimal)
"""

# Each line must be an error of its own.
_REFUSED = [
    "m + 1.5",
    "1.5 + m",
    "m * m",
    "m * 1.5",
    "m / m",
    "m / 2.5",
    "m - 1",
    "m < 1",
    "float(m)",
    "int(m)",
    "range(m)",
    "[1, 2][m]",
    "Money('1.25')",
]


def _mypy(tmp_path: Path, source: str) -> tuple[int, list[str]]:
    target = tmp_path / "snippet.py"
    target.write_text(source)
    stdout, stderr, status = api.run(
        [
            "--strict",
            "--no-incremental",
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "--python-version",
            "3.11",
            str(target),
        ]
    )
    assert "error: " not in stderr, stderr
    errors = [line for line in stdout.splitlines() if ": error: " in line]
    return status, errors


def test_mypy_accepts_the_arithmetic(tmp_path: Path) -> None:
    status, errors = _mypy(tmp_path, textwrap.dedent(_ACCEPTED))
    assert status == 0 and errors == []


def test_mypy_refuses_floats_money_times_money_and_conversions(tmp_path: Path) -> None:
    header = "from callscaler_async import Money\nm = Money(125)\n"
    lines = [f"x{i} = {expr}" for i, expr in enumerate(_REFUSED)]
    status, errors = _mypy(tmp_path, header + "\n".join(lines) + "\n")
    assert status == 1
    flagged = {int(line.split(":")[1]) for line in errors}
    first = header.count("\n") + 1
    missing = [expr for i, expr in enumerate(_REFUSED) if first + i not in flagged]
    assert missing == [], errors
