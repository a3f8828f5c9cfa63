"""ISO 4217 currencies, and how the gateway takes amounts in each.

Amounts are integers in the currency's minor unit as the gateway counts it. Per currency the
table says the minor-unit exponent, the gateway's minimum charge and the increment a charge
must be a multiple of. Source for all three: Stripe's "Supported currencies" page,
https://docs.stripe.com/currencies (zero-decimal currencies; three-decimal currencies, whose
amounts must end in 0; ISK and UGX, zero-decimal in use but sent with two decimals that must be
00; minimum charge amounts).
"""

from __future__ import annotations

from dataclasses import dataclass

_CODES = """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN
    BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD
    FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY
    KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP
    MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR
    RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT
    TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR
    ZMW ZWG
"""
ISO_4217 = frozenset(_CODES.split())

_ZERO_DECIMAL = frozenset(
    [
        "BIF",
        "CLP",
        "DJF",
        "GNF",
        "JPY",
        "KMF",
        "KRW",
        "MGA",
        "PYG",
        "RWF",
        "VND",
        "VUV",
        "XAF",
        "XOF",
        "XPF",
    ]
)
_THREE_DECIMAL = frozenset(["BHD", "JOD", "KWD", "OMR", "TND"])
# Zero-decimal in practice, but the gateway takes two decimals that must be 00.
_WHOLE_UNITS_IN_CENTS = frozenset({"ISK", "UGX"})
# The gateway's minimum charge, in minor units, where it publishes one.
_MINIMUMS = {
    "USD": 50,
    "AED": 200,
    "AUD": 50,
    "BGN": 100,
    "BRL": 50,
    "CAD": 50,
    "CHF": 50,
    "CZK": 1500,
    "DKK": 250,
    "EUR": 50,
    "GBP": 30,
    "HKD": 400,
    "HUF": 17500,
    "INR": 50,
    "JPY": 50,
    "MXN": 1000,
    "MYR": 200,
    "NOK": 300,
    "NZD": 50,
    "PLN": 200,
    "RON": 200,
    "SEK": 300,
    "SGD": 50,
    "THB": 1000,
}


@dataclass(frozen=True)
class Currency:
    code: str
    # Digits after the decimal point in the amounts the gateway takes.
    exponent: int
    # The smallest amount the gateway charges; smaller amounts carry to the next invoice.
    minimum_charge: int
    # Every charge is a multiple of this many minor units.
    increment: int

    def round_down(self, amount: int) -> int:
        """The largest chargeable multiple of the increment not above amount (toward zero)."""
        sign = -1 if amount < 0 else 1
        return sign * (abs(amount) // self.increment * self.increment)

    def representable(self, amount: int) -> bool:
        return amount % self.increment == 0


def currency(code: str) -> Currency:
    """The rules for an ISO 4217 code; KeyError for a code not in circulation."""
    if code not in ISO_4217:
        raise KeyError(code)
    if code in _ZERO_DECIMAL:
        exponent, increment = 0, 1
    elif code in _THREE_DECIMAL:
        exponent, increment = 3, 10
    elif code in _WHOLE_UNITS_IN_CENTS:
        exponent, increment = 2, 100
    else:
        exponent, increment = 2, 1
    # Elsewhere the gateway's minimum is "the equivalent of 0.50 USD", which needs an exchange
    # rate; one increment is the floor this table can state without one.
    return Currency(code, exponent, _MINIMUMS.get(code, increment), increment)
