//! Exact Kubernetes quantities. No I/O.
//!
//! The crates on crates.io that add quantities either parse through `f64` (`kube_quantity`:
//! `0.1 + 0.2` is not `300m` there) or only take integers (`k8s_quantity_parser`), and a
//! budget that drifts by one nano-unit per allocation is exactly the overrun we promise not to
//! have. So [`Amount`] is an `i128` count of nano-units, the finest unit Kubernetes keeps: the
//! API server rounds anything finer *up* to `1n`, and so do we. `i128` nano-units hold
//! ±1.7e29, far beyond the 2^63-1 a quantity may carry.
//!
//! Grammar (apimachinery `resource.ParseQuantity`):
//! `[+-] (digits | digits. | digits.digits | .digits) (suffix)`, suffix one of
//! `n u m "" k M G T P E` (decimal SI), `Ki Mi Gi Ti Pi Ei` (binary SI), or `e<int>` / `E<int>`
//! (decimal exponent; `E` alone is exa).

use std::fmt;
use std::str::FromStr;

/// Nano-units in one unit.
const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// Why a quantity string is not a quantity. Messages name the input so a 400 can echo it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("empty quantity")]
    Empty,
    #[error("{0:?} is not a quantity (expected e.g. 500m, 1.5, 2Gi, 1e3)")]
    Malformed(String),
    #[error("{0:?} is too large")]
    TooLarge(String),
}

/// An exact quantity: a signed count of nano-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(i128);

/// How the number is scaled by its suffix.
#[derive(Debug, Clone, Copy)]
enum Scale {
    /// Times 10^n (decimal SI and exponents).
    Decimal(i32),
    /// Times 1024^n (binary SI).
    Binary(u32),
}

impl Amount {
    /// Zero of anything.
    pub const ZERO: Amount = Amount(0);

    /// `units` whole units (`3` cpus, `10` pods).
    pub const fn from_units(units: i64) -> Amount {
        Amount(units as i128 * NANOS_PER_UNIT)
    }

    /// `milli` thousandths (`1500` = `1500m`).
    pub const fn from_milli(milli: i64) -> Amount {
        Amount(milli as i128 * 1_000_000)
    }

    /// The amount in nano-units.
    pub const fn nanos(self) -> i128 {
        self.0
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// In whole units as a float, for metrics (`1500m` -> 1.5); exact up to 2^53 nano-units,
    /// close enough beyond for a gauge, never used for a decision.
    #[allow(clippy::cast_precision_loss)]
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / NANOS_PER_UNIT as f64
    }

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }

    /// `self - other`, or zero when that would be negative: what is left of a budget.
    pub fn saturating_sub_to_zero(self, other: Amount) -> Amount {
        Amount(self.0.saturating_sub(other.0).max(0))
    }
}

impl FromStr for Amount {
    type Err = QuantityError;

    fn from_str(input: &str) -> Result<Amount, QuantityError> {
        if input.is_empty() {
            return Err(QuantityError::Empty);
        }
        let malformed = || QuantityError::Malformed(input.to_owned());
        let (negative, rest) = split_sign(input);
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_len);
        let too_large = || QuantityError::TooLarge(input.to_owned());
        let (digits, fraction_digits) = split_number(number).ok_or_else(malformed)?;
        let scale = parse_suffix(suffix).ok_or_else(malformed)?;
        let mantissa = parse_mantissa(&digits).ok_or_else(too_large)?;
        let nanos = to_nanos(mantissa, fraction_digits, scale).ok_or_else(too_large)?;
        Ok(Amount(if negative { -nanos } else { nanos }))
    }
}

fn split_sign(input: &str) -> (bool, &str) {
    match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    }
}

/// `digits[.digits]` as the digits of an integer mantissa and its count of fraction digits;
/// `None` when it is not a number. Leading zeros and trailing fraction zeros are dropped first
/// so that `0000.5000` cannot overflow.
fn split_number(number: &str) -> Option<(String, u32)> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return None;
    }
    let fraction = fraction.trim_end_matches('0');
    let digits = format!("{}{fraction}", whole.trim_start_matches('0'));
    Some((digits, u32::try_from(fraction.len()).ok()?))
}

/// The mantissa's digits as an integer; `None` when they overflow `i128`.
fn parse_mantissa(digits: &str) -> Option<i128> {
    if digits.is_empty() {
        Some(0)
    } else {
        digits.parse().ok()
    }
}

fn parse_suffix(suffix: &str) -> Option<Scale> {
    let scale = match suffix {
        "n" => Scale::Decimal(-9),
        "u" => Scale::Decimal(-6),
        "m" => Scale::Decimal(-3),
        "" => Scale::Decimal(0),
        "k" => Scale::Decimal(3),
        "M" => Scale::Decimal(6),
        "G" => Scale::Decimal(9),
        "T" => Scale::Decimal(12),
        "P" => Scale::Decimal(15),
        "E" => Scale::Decimal(18),
        "Ki" => Scale::Binary(1),
        "Mi" => Scale::Binary(2),
        "Gi" => Scale::Binary(3),
        "Ti" => Scale::Binary(4),
        "Pi" => Scale::Binary(5),
        "Ei" => Scale::Binary(6),
        _ => return parse_exponent(suffix),
    };
    Some(scale)
}

/// `e<int>` or `E<int>`; the integer may be signed.
fn parse_exponent(suffix: &str) -> Option<Scale> {
    let exponent = suffix.strip_prefix('e').or_else(|| suffix.strip_prefix('E'))?;
    let digits = exponent.trim_start_matches(['+', '-']);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || exponent.len() - digits.len() > 1 {
        return None;
    }
    exponent.parse::<i32>().ok().map(Scale::Decimal)
}

/// `mantissa × 10^-fraction_digits × scale` in nano-units, rounded up (as the API server does)
/// when finer than a nano-unit. `None` on overflow.
fn to_nanos(mantissa: i128, fraction_digits: u32, scale: Scale) -> Option<i128> {
    if mantissa == 0 {
        return Some(0);
    }
    let (multiplier, exponent) = match scale {
        Scale::Decimal(exponent) => (1, exponent),
        Scale::Binary(power) => (1024_i128.checked_pow(power)?, 0),
    };
    // nanos = mantissa × multiplier × 10^(exponent + 9 − fraction_digits)
    let shift = i64::from(exponent) + 9 - i64::from(fraction_digits);
    let scaled = mantissa.checked_mul(multiplier)?;
    if shift >= 0 {
        scaled.checked_mul(10_i128.checked_pow(u32::try_from(shift).ok()?)?)
    } else {
        let divisor = u32::try_from(-shift).ok().and_then(|d| 10_i128.checked_pow(d));
        // A divisor beyond i128 means a value far below one nano-unit: it rounds up to 1n.
        Some(divisor.map_or(1, |d| div_round_up(scaled, d)))
    }
}

fn div_round_up(value: i128, divisor: i128) -> i128 {
    let quotient = value / divisor;
    if value % divisor == 0 {
        quotient
    } else {
        quotient + 1
    }
}

/// Decimal SI suffixes by power of 1000, from nano.
const DECIMAL_SUFFIXES: [&str; 10] = ["n", "u", "m", "", "k", "M", "G", "T", "P", "E"];
/// Binary SI suffixes by power of 1024, from Ki.
const BINARY_SUFFIXES: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];

/// Canonical form: an integer mantissa with the largest suffix that keeps it whole, in decimal
/// SI or, when shorter, binary SI (`1073741824` → `1Gi`, `1.5` → `1500m`, `2000000000` → `2G`).
/// Ties go to decimal; a count that is a whole multiple of 1024 still prints binary when that is
/// shorter (`2048` → `2Ki`), and the API server reads it back exactly. Unlike apimachinery we
/// do not remember the suffix the input used: our values are sums of several inputs, and any
/// canonical spelling parses back to the same amount, which is all a `hard` needs.
impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let decimal = decimal_form(self.0);
        match binary_form(self.0) {
            Some(binary) if binary.len() < decimal.len() => f.write_str(&binary),
            _ => f.write_str(&decimal),
        }
    }
}

fn decimal_form(nanos: i128) -> String {
    if nanos == 0 {
        return "0".to_owned();
    }
    let mut mantissa = nanos;
    let mut power = 0;
    while power + 1 < DECIMAL_SUFFIXES.len() && mantissa % 1000 == 0 {
        mantissa /= 1000;
        power += 1;
    }
    format!("{mantissa}{}", DECIMAL_SUFFIXES[power])
}

/// Binary SI form, only for whole multiples of 1Ki.
fn binary_form(nanos: i128) -> Option<String> {
    if nanos == 0 || nanos % NANOS_PER_UNIT != 0 {
        return None;
    }
    let mut mantissa = nanos / NANOS_PER_UNIT;
    let mut power = 0;
    while power < BINARY_SUFFIXES.len() && mantissa % 1024 == 0 {
        mantissa /= 1024;
        power += 1;
    }
    let suffix = BINARY_SUFFIXES.get(power.checked_sub(1)?)?;
    Some(format!("{mantissa}{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amount(s: &str) -> Amount {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn equal_spellings_are_equal_amounts() {
        let table = [
            ("1.5", "1500m"),
            ("1Gi", "1073741824"),
            ("100M", "100000000"),
            ("2e3", "2k"),
            ("2E3", "2000"),
            ("1E", "1e18"),
            ("0.5Ki", "512"),
            ("1.5Gi", "1610612736"),
            ("+3", "3"),
            (".5", "500m"),
            ("5.", "5"),
            ("0001.5000", "1500m"),
            ("1e-3", "1m"),
            ("1e+3", "1k"),
            ("250u", "250000n"),
            ("0", "0Gi"),
            ("-1.5", "-1500m"),
            ("1Ei", "1152921504606846976"),
        ];
        for (left, right) in table {
            assert_eq!(amount(left), amount(right), "{left} vs {right}");
        }
    }

    #[test]
    fn finer_than_nano_rounds_up_like_the_api_server() {
        assert_eq!(amount("0.1n"), amount("1n"));
        assert_eq!(amount("1.0000000001"), amount("1000000001n"));
        assert_eq!(amount("1e-100"), amount("1n"));
        assert_eq!(amount("0e-100"), Amount::ZERO);
    }

    #[test]
    fn addition_is_exact() {
        let sum = amount("0.1").checked_add(amount("0.2"));
        assert_eq!(sum, Some(amount("300m")));
        let sum = amount("1Gi").checked_add(amount("1Mi"));
        assert_eq!(sum, Some(amount("1025Mi")));
    }

    #[test]
    fn malformed_and_oversized_input_is_refused() {
        for bad in [
            "", "abc", "1.2.3", "1x", "Gi", "1 Gi", " 1", "1Gi ", ".", "--1", "1e", "1e+", "1e--3",
            "1.5e3.5", "1ki", "1KI",
        ] {
            assert!(bad.parse::<Amount>().is_err(), "{bad:?} parsed");
        }
        assert!(matches!(
            "1e100".parse::<Amount>(),
            Err(QuantityError::TooLarge(_))
        ));
        assert!(matches!(
            "99999999999999999999999999999999999999999".parse::<Amount>(),
            Err(QuantityError::TooLarge(_))
        ));
        assert_eq!("".parse::<Amount>(), Err(QuantityError::Empty));
    }

    #[test]
    fn canonical_form_is_whole_and_shortest() {
        let table = [
            ("1.5", "1500m"),
            ("1073741824", "1Gi"),
            ("1Gi", "1Gi"),
            ("2000000000", "2G"),
            ("100M", "100M"),
            ("2e3", "2k"),
            ("1000", "1k"),
            ("1024", "1Ki"),
            ("10", "10"),
            ("0", "0"),
            ("0Gi", "0"),
            ("1500Mi", "1500Mi"),
            ("250u", "250u"),
            ("1n", "1n"),
            ("-2Gi", "-2Gi"),
            ("-1500m", "-1500m"),
            ("1E", "1E"),
        ];
        for (input, canonical) in table {
            assert_eq!(amount(input).to_string(), canonical, "{input}");
        }
    }

    #[test]
    fn canonical_form_round_trips() {
        for input in [
            "1.5",
            "1Gi",
            "3Mi",
            "100M",
            "7n",
            "123456789",
            "1.000001",
            "-5Ki",
            "0.5Ki",
        ] {
            let a = amount(input);
            assert_eq!(amount(&a.to_string()), a, "{input}");
        }
    }

    #[test]
    fn saturating_sub_stops_at_zero() {
        assert_eq!(amount("1").saturating_sub_to_zero(amount("2")), Amount::ZERO);
        assert_eq!(amount("2").saturating_sub_to_zero(amount("500m")), amount("1.5"));
    }
}

/// Hostile quantities (issue 15): never a panic, refusals that say something,
/// and every accepted quantity reads back the same from its canonical form.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_quantity_parses_or_says_why(input in "[-+]?[0-9.]{0,24}([a-zA-Z]{0,2}|[eE][-+]?[0-9]{1,3})|\\PC{0,16}") {
            match input.parse::<Amount>() {
                Ok(amount) => prop_assert_eq!(amount.to_string().parse::<Amount>().ok(), Some(amount)),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }

        #[test]
        fn canonical_forms_round_trip(nanos in any::<i64>(), scale in 0u32..10) {
            let amount = Amount(i128::from(nanos) * 10i128.pow(scale));
            prop_assert_eq!(amount.to_string().parse::<Amount>().ok(), Some(amount));
        }
    }
}
