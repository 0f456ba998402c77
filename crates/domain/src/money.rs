//! Money: an integer count of minor units plus an ISO 4217 currency.
//!
//! Invariants: amounts are never negative and never above [`Money::MAX_MINOR`], so every amount
//! also survives a JavaScript client (< 2^53); arithmetic is checked and mixing currencies is an
//! error, never a silent conversion.

use crate::error::{Error, Result};
use std::fmt;

/// An ISO 4217 alphabetic currency code (`USD`, `THB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

impl Currency {
    /// What [`Currency::parse`] accepts.
    pub const PATTERN: &str = "^[A-Z]{3}$";

    pub fn parse(raw: &str) -> Result<Self> {
        Self::parse_field("currency", raw)
    }

    pub fn parse_field(field: &str, raw: &str) -> Result<Self> {
        match raw.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_uppercase()) => {
                Ok(Currency([*a, *b, *c]))
            }
            _ => Err(Error::invalid_field(
                field,
                "must be an ISO 4217 code of three upper-case letters",
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    amount_minor: i64,
    currency: Currency,
}

impl Money {
    /// 10^15 minor units: ten trillion dollars, and still exact in an IEEE double.
    pub const MAX_MINOR: i64 = 1_000_000_000_000_000;

    pub fn new(amount_minor: i64, currency: Currency) -> Result<Self> {
        Self::new_field("amount_minor", amount_minor, currency)
    }

    pub fn new_field(field: &str, amount_minor: i64, currency: Currency) -> Result<Self> {
        if !(0..=Self::MAX_MINOR).contains(&amount_minor) {
            return Err(Error::invalid_field(
                field,
                format!("must be between 0 and {}", Self::MAX_MINOR),
            ));
        }
        Ok(Money {
            amount_minor,
            currency,
        })
    }

    pub fn zero(currency: Currency) -> Self {
        Money {
            amount_minor: 0,
            currency,
        }
    }

    pub fn amount_minor(&self) -> i64 {
        self.amount_minor
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    pub fn checked_add(self, other: Money) -> Result<Money> {
        if self.currency != other.currency {
            return Err(Error::invalid_field(
                "currency",
                format!(
                    "cannot add {} to {}: currencies differ",
                    other.currency, self.currency
                ),
            ));
        }
        self.amount_minor
            .checked_add(other.amount_minor)
            .ok_or_else(overflow)
            .and_then(|sum| Money::new(sum, self.currency).map_err(|_| overflow()))
    }

    pub fn checked_mul(self, factor: u32) -> Result<Money> {
        self.amount_minor
            .checked_mul(i64::from(factor))
            .ok_or_else(overflow)
            .and_then(|product| Money::new(product, self.currency).map_err(|_| overflow()))
    }
}

/// A sum or product of amounts past [`Money::MAX_MINOR`]. The amounts come from the catalogue
/// (prices) as much as from the request (quantities), so a request that is valid by itself
/// meets it only against the current prices: a conflict with the catalogue, not a malformed
/// request.
fn overflow() -> Error {
    Error::conflict(format!(
        "the total exceeds the largest amount, {}, at the current prices",
        Money::MAX_MINOR
    ))
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount_minor, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn usd() -> Currency {
        Currency::parse("USD").unwrap()
    }

    #[test]
    fn currencies_are_three_upper_case_letters() {
        assert_eq!(usd().as_str(), "USD");
        for bad in ["usd", "US", "USDT", "", "U$D", "ДОЛ"] {
            assert!(Currency::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn negative_and_huge_amounts_are_rejected() {
        assert!(Money::new(-1, usd()).is_err());
        assert!(Money::new(Money::MAX_MINOR + 1, usd()).is_err());
        assert!(Money::new(Money::MAX_MINOR, usd()).is_ok());
    }

    #[test]
    fn adding_different_currencies_is_an_error() {
        let thb = Currency::parse("THB").unwrap();
        let sum = Money::new(1, usd())
            .unwrap()
            .checked_add(Money::new(1, thb).unwrap());
        assert!(sum.is_err());
    }

    #[test]
    fn overflowing_arithmetic_is_an_error() {
        let max = Money::new(Money::MAX_MINOR, usd()).unwrap();
        assert!(max.checked_add(Money::new(1, usd()).unwrap()).is_err());
        assert!(max.checked_mul(2).is_err());
        assert!(Money::new(i64::MAX / 2, usd()).is_err());
    }

    proptest! {
        #[test]
        fn currencies_are_their_pattern(raw in crate::text::tests::edge_text()) {
            let pattern = regex::Regex::new(Currency::PATTERN).unwrap();
            prop_assert_eq!(Currency::parse(&raw).is_ok(), pattern.is_match(&raw));
            let upper = raw.to_uppercase();
            prop_assert_eq!(Currency::parse(&upper).is_ok(), pattern.is_match(&upper));
        }

        #[test]
        fn addition_is_exact_when_it_succeeds(a in 0..=Money::MAX_MINOR, b in 0..=Money::MAX_MINOR) {
            let sum = Money::new(a, usd()).unwrap().checked_add(Money::new(b, usd()).unwrap());
            match sum {
                Ok(sum) => prop_assert_eq!(sum.amount_minor(), a + b),
                Err(_) => prop_assert!(a + b > Money::MAX_MINOR),
            }
        }

        #[test]
        fn multiplication_is_exact_when_it_succeeds(a in 0..=Money::MAX_MINOR, q in 0u32..=100_000) {
            match Money::new(a, usd()).unwrap().checked_mul(q) {
                Ok(product) => prop_assert_eq!(product.amount_minor() as i128, a as i128 * q as i128),
                Err(_) => prop_assert!(a as i128 * q as i128 > Money::MAX_MINOR as i128),
            }
        }
    }
}
