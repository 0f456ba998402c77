//! The fulfillment pipeline's pure rules: the risk check of a paid order, the carrier and
//! pickup slot of a shipment, and the carrier's retry policy. No I/O: the service gathers the
//! facts (amount, recent payments, country, email) and applies these.

use std::collections::{BTreeMap, BTreeSet};

/// The risk rules (configuration). The default blocks nothing and has no amount limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiskRules {
    /// The largest order total, in minor units, per currency code; absent currency: no limit.
    pub max_amount: BTreeMap<String, i64>,
    /// At most `count` payments per customer within `window_secs` (the one being checked
    /// included).
    pub velocity: Velocity,
    /// Shipping countries refused (ISO 3166 alpha-2, upper case).
    pub blocked_countries: BTreeSet<String>,
    /// Contact emails refused, normalised with [`normalise_email`]. Personal data: never
    /// logged, never printed.
    pub blocked_emails: BTreeSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Velocity {
    pub count: i64,
    pub window_secs: i64,
}

impl Default for RiskRules {
    fn default() -> Self {
        RiskRules {
            max_amount: BTreeMap::new(),
            velocity: Velocity {
                count: 1000,
                window_secs: 60,
            },
            blocked_countries: BTreeSet::new(),
            blocked_emails: BTreeSet::new(),
        }
    }
}

/// What the risk check looks at.
#[derive(Debug, Clone, Copy)]
pub struct RiskFacts<'a> {
    pub currency: &'a str,
    pub amount_minor: i64,
    /// The customer's payments within the velocity window, this order's included.
    pub recent_payments: i64,
    pub country: &'a str,
    /// The contact email as stored (compared normalised).
    pub email: &'a str,
}

/// Why an order was rejected; `as_str` is a metric-safe label, `detail` is for the timeline
/// (never the email itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RiskDecision {
    Approved,
    Rejected {
        reason: &'static str,
        detail: String,
    },
}

/// Email comparison form: trimmed, lower case (the whole address; providers differ too much on
/// local-part rules to do more).
pub fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Applies the rules in a fixed order: blocked country, blocked email, amount, velocity.
pub fn assess(rules: &RiskRules, facts: &RiskFacts<'_>) -> RiskDecision {
    let country = facts.country.trim().to_ascii_uppercase();
    if rules.blocked_countries.contains(&country) {
        return RiskDecision::Rejected {
            reason: "blocked_country",
            detail: format!("shipping country {country} is blocked"),
        };
    }
    if rules.blocked_emails.contains(&normalise_email(facts.email)) {
        return RiskDecision::Rejected {
            reason: "blocked_email",
            detail: "the contact email is blocked".to_owned(),
        };
    }
    if let Some(&max) = rules.max_amount.get(facts.currency)
        && facts.amount_minor > max
    {
        return RiskDecision::Rejected {
            reason: "amount_limit",
            detail: format!(
                "total {} {} exceeds the limit of {max}",
                facts.amount_minor, facts.currency
            ),
        };
    }
    if facts.recent_payments > rules.velocity.count {
        return RiskDecision::Rejected {
            reason: "velocity",
            detail: format!(
                "{} payments by this customer within {} s exceed the limit of {}",
                facts.recent_payments, rules.velocity.window_secs, rules.velocity.count
            ),
        };
    }
    RiskDecision::Approved
}

/// The carrier of a warehouse's country: a small table with a default.
pub fn carrier_for_country(country: &str) -> &'static str {
    match country {
        "TH" => "thai-express",
        "DE" | "AT" | "CH" => "dhl",
        "US" | "CA" => "ups",
        "GB" => "royal-mail",
        _ => "global-post",
    }
}

const HOUR_MS: i64 = 3_600_000;

/// The pickup slot: the next full hour strictly after `now_ms + lead_ms`.
pub fn pickup_slot_ms(now_ms: i64, lead_ms: i64) -> i64 {
    let earliest = now_ms.saturating_add(lead_ms.max(0));
    (earliest.div_euclid(HOUR_MS) + 1) * HOUR_MS
}

/// How a carrier's answer is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    Accepted,
    /// 408, 429, 5xx, timeouts, connection errors: try again after a backoff.
    Retry,
    /// Any other answer: the carrier refused the shipment for good.
    Final,
}

pub fn classify_status(status: u16) -> PushOutcome {
    match status {
        200..=299 => PushOutcome::Accepted,
        408 | 429 | 500..=599 => PushOutcome::Retry,
        _ => PushOutcome::Final,
    }
}

/// Exponential backoff with jitter for the `attempt`-th retry (1-based): between half and all
/// of `base_ms · 2^(attempt-1)`, capped at 30 s. `jitter` is in `0..1000`.
pub fn backoff_ms(base_ms: u64, attempt: u32, jitter: u64) -> u64 {
    let ceiling = base_ms
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(16))
        .min(30_000);
    ceiling / 2 + ceiling * (jitter % 1000) / 2000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>() -> RiskFacts<'a> {
        RiskFacts {
            currency: "USD",
            amount_minor: 5000,
            recent_payments: 1,
            country: "TH",
            email: "A@Example.com ",
        }
    }

    #[test]
    fn the_default_rules_approve() {
        assert_eq!(
            assess(&RiskRules::default(), &facts()),
            RiskDecision::Approved
        );
    }

    #[test]
    fn each_rule_rejects_with_its_reason() {
        let reason = |rules: &RiskRules| match assess(rules, &facts()) {
            RiskDecision::Rejected { reason, .. } => reason,
            RiskDecision::Approved => "approved",
        };
        let mut rules = RiskRules::default();
        rules.blocked_countries.insert("TH".into());
        assert_eq!(reason(&rules), "blocked_country");
        let mut rules = RiskRules::default();
        rules
            .blocked_emails
            .insert(normalise_email("a@EXAMPLE.com"));
        assert_eq!(reason(&rules), "blocked_email");
        let mut rules = RiskRules::default();
        rules.max_amount.insert("USD".into(), 4999);
        assert_eq!(reason(&rules), "amount_limit");
        rules.max_amount.insert("USD".into(), 5000);
        assert_eq!(reason(&rules), "approved");
        let mut rules = RiskRules::default();
        rules.velocity.count = 0;
        assert_eq!(reason(&rules), "velocity");
    }

    #[test]
    fn a_blocked_email_never_appears_in_the_detail() {
        let mut rules = RiskRules::default();
        rules.blocked_emails.insert("a@example.com".into());
        let RiskDecision::Rejected { detail, .. } = assess(&rules, &facts()) else {
            panic!("approved")
        };
        assert!(!detail.to_lowercase().contains("example"), "{detail}");
    }

    #[test]
    fn pickup_is_the_next_full_hour_after_the_lead_time() {
        assert_eq!(pickup_slot_ms(0, 0), HOUR_MS);
        assert_eq!(pickup_slot_ms(HOUR_MS - 1, 0), HOUR_MS);
        assert_eq!(pickup_slot_ms(HOUR_MS, 0), 2 * HOUR_MS);
        assert_eq!(pickup_slot_ms(10, 2 * HOUR_MS), 3 * HOUR_MS);
    }

    #[test]
    fn carrier_answers_are_classified() {
        assert_eq!(classify_status(200), PushOutcome::Accepted);
        assert_eq!(classify_status(202), PushOutcome::Accepted);
        for retry in [408, 429, 500, 503] {
            assert_eq!(classify_status(retry), PushOutcome::Retry);
        }
        for fin in [400, 401, 404, 409, 422] {
            assert_eq!(classify_status(fin), PushOutcome::Final);
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        for attempt in 1..10 {
            let ceiling = (100u64 << (attempt - 1)).min(30_000);
            for jitter in [0, 500, 999] {
                let wait = backoff_ms(100, attempt, jitter);
                assert!((ceiling / 2..=ceiling).contains(&wait), "{attempt} {wait}");
            }
        }
        assert!(backoff_ms(100, 40, 999) <= 30_000);
    }

    #[test]
    fn carriers_have_a_default() {
        assert_eq!(carrier_for_country("TH"), "thai-express");
        assert_eq!(carrier_for_country("ZZ"), "global-post");
    }
}
