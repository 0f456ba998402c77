//! Offline POS terminals: the identifiers of a terminal's sales and the rules a sale synced
//! later must meet (its time within the offline window, a known payment method). A sale is a
//! fact — the goods left the shop — so what the catalogue disagrees with (price, stock) is
//! reported, never refused.

use crate::error::{Error, Result};
use crate::ids::parse_identifier;
use crate::named::named_enum;

/// The longest terminal id and client sale id.
pub const ID_MAX_CHARS: usize = 64;
/// The largest batch number: 2^53 - 1, the largest integer a JSON number carries exactly.
pub const MAX_BATCH_SEQ: i64 = (1 << 53) - 1;
/// At most this many sales per batch.
pub const MAX_SALES_PER_BATCH: usize = 500;
/// A sale may be dated this far in the future (a terminal's clock runs a little fast).
pub const MAX_CLOCK_AHEAD_MS: i64 = 5 * 60 * 1000;
/// The offline window when `ORDO_POS_OFFLINE_WINDOW_HOURS` is not set.
pub const DEFAULT_OFFLINE_WINDOW_HOURS: u64 = 72;

/// A terminal's id: letters, digits and `-_.:`, up to 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TerminalId(String);

impl TerminalId {
    pub fn parse(raw: &str) -> Result<Self> {
        parse_identifier("terminal_id", raw, ID_MAX_CHARS).map(TerminalId)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A sale's id, unique per terminal: letters, digits and `-_.:`, up to 64 characters.
pub fn parse_client_sale_id(field: &str, raw: &str) -> Result<String> {
    parse_identifier(field, raw, ID_MAX_CHARS)
}

named_enum! {
    /// How a sale was paid at the terminal.
    pub enum PosPaymentMethod;
    unknown = Error::invalid_field("payment.method", "must be cash or card_offline");
    {
        Cash = "cash",
        CardOffline = "card_offline",
    }
}

/// Checks that a sale made at `sold_at_ms` can be taken at `now_ms`: not more than
/// [`MAX_CLOCK_AHEAD_MS`] in the future, not older than the offline window.
pub fn check_sold_at(sold_at_ms: i64, now_ms: i64, window_hours: u64) -> Result<()> {
    if sold_at_ms > now_ms.saturating_add(MAX_CLOCK_AHEAD_MS) {
        return Err(Error::invalid_field(
            "sold_at",
            "is more than 5 minutes in the future",
        ));
    }
    let window_ms = i64::try_from(window_hours.saturating_mul(3_600_000)).unwrap_or(i64::MAX);
    if sold_at_ms < now_ms.saturating_sub(window_ms) {
        return Err(Error::invalid_field(
            "sold_at",
            format!("is older than the offline window of {window_hours} hours"),
        ));
    }
    Ok(())
}

/// The sequence numbers below `batch_seq` that are not in `received` (ascending), at most
/// `limit` of them (the oldest first): the batches a terminal sent that never arrived.
pub fn missing_batch_seqs(batch_seq: i64, received: &[i64], limit: usize) -> Vec<i64> {
    let mut missing = Vec::new();
    let mut next = 1;
    for &seq in received.iter().chain(std::iter::once(&batch_seq)) {
        while next < seq && missing.len() < limit {
            missing.push(next);
            next += 1;
        }
        if missing.len() >= limit {
            break;
        }
        next = next.max(seq + 1);
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn a_sale_must_lie_within_the_offline_window_and_not_ahead_of_the_clock() {
        let now = 1_000 * HOUR;
        assert!(check_sold_at(now, now, 72).is_ok());
        assert!(check_sold_at(now + MAX_CLOCK_AHEAD_MS, now, 72).is_ok());
        assert!(check_sold_at(now + MAX_CLOCK_AHEAD_MS + 1, now, 72).is_err());
        assert!(check_sold_at(now - 72 * HOUR, now, 72).is_ok());
        assert!(check_sold_at(now - 72 * HOUR - 1, now, 72).is_err());
        assert!(check_sold_at(now - 2 * HOUR, now, 1).is_err());
    }

    #[test]
    fn missing_batches_are_the_gaps_below_this_one() {
        assert_eq!(missing_batch_seqs(1, &[], 100), Vec::<i64>::new());
        assert_eq!(missing_batch_seqs(4, &[], 100), [1, 2, 3]);
        assert_eq!(missing_batch_seqs(6, &[1, 3, 4], 100), [2, 5]);
        assert_eq!(missing_batch_seqs(3, &[1, 2], 100), Vec::<i64>::new());
        assert_eq!(missing_batch_seqs(1_000_000, &[], 3), [1, 2, 3]);
    }

    #[test]
    fn ids_and_methods_are_checked() {
        assert!(TerminalId::parse("till-07").is_ok());
        assert!(TerminalId::parse("till 07").is_err());
        assert!(parse_client_sale_id("client_sale_id", "").is_err());
        assert_eq!(
            PosPaymentMethod::parse("cash").unwrap(),
            PosPaymentMethod::Cash
        );
        assert!(PosPaymentMethod::parse("cheque").is_err());
    }
}
