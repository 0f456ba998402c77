//! Orders: lines and their pricing, the shipping address and contact, and the status state
//! machine. The only way to change a status is [`OrderStatus::apply`], which refuses every
//! transition not drawn below.
//!
//! ```text
//! pending_payment ──payment_succeeded──▶ paid ──risk_approved──▶ risk_approved ──split──▶ split
//!       │                                 │                          │                      │
//!   cancel / payment_timed_out       risk_rejected            fulfillment_failed      scheduled
//!       ▼                                 ▼                          ▼                      ▼
//!   cancelled                         rejected                fulfillment_failed ◀── scheduled ──shipped──▶ shipped
//! ```

use crate::error::{Error, ErrorKind, Result};
use crate::ids::{CountryCode, CustomerId, Sku};
use crate::money::{Currency, Money};
use crate::named::named_enum;
use crate::personal::Personal;
use crate::stock::Quantity;
use crate::text::{control_class, parse_text, space_class};

named_enum! {
    /// Where an order stands; [`OrderStatus::apply`] is the only way to change it.
    pub enum OrderStatus;
    unknown = Error::invalid_field("status", "is not a known order status");
    {
        PendingPayment = "pending_payment",
        Paid = "paid",
        RiskApproved = "risk_approved",
        Split = "split",
        Scheduled = "scheduled",
        Shipped = "shipped",
        Cancelled = "cancelled",
        Rejected = "rejected",
        FulfillmentFailed = "fulfillment_failed",
        /// A sale a POS terminal recorded: the goods left the shop, nothing follows.
        Completed = "completed",
    }
}

/// What happens to an order; each may move it to a new status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderEvent {
    PaymentSucceeded,
    /// Cancelled by the customer or by the payment-timeout job.
    Cancel,
    RiskApproved,
    RiskRejected,
    SplitIntoShipments,
    ShipmentsScheduled,
    AllShipmentsAccepted,
    FulfillmentFailed,
}

impl OrderStatus {
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            OrderStatus::Shipped
                | OrderStatus::Cancelled
                | OrderStatus::Rejected
                | OrderStatus::FulfillmentFailed
                | OrderStatus::Completed
        )
    }

    /// Whether the order may have shipments: they are created by the split stage, so an
    /// order that never got that far has none to look up.
    pub const fn may_have_shipments(self) -> bool {
        !matches!(
            self,
            OrderStatus::PendingPayment
                | OrderStatus::Paid
                | OrderStatus::RiskApproved
                | OrderStatus::Cancelled
                | OrderStatus::Completed
        )
    }

    /// The status after `event`, or a `conflict` error if the event is illegal in this status.
    pub fn apply(self, event: OrderEvent) -> Result<OrderStatus> {
        use OrderEvent as E;
        use OrderStatus as S;
        let next = match (self, event) {
            (S::PendingPayment, E::PaymentSucceeded) => S::Paid,
            (S::PendingPayment, E::Cancel) => S::Cancelled,
            (S::Paid, E::RiskApproved) => S::RiskApproved,
            (S::Paid, E::RiskRejected) => S::Rejected,
            (S::RiskApproved, E::SplitIntoShipments) => S::Split,
            (S::Split, E::ShipmentsScheduled) => S::Scheduled,
            (S::Scheduled, E::AllShipmentsAccepted) => S::Shipped,
            // A paid order whose risk check keeps failing (not a rejection: the check could
            // not run) fails too, rather than wait forever.
            (S::Paid | S::RiskApproved | S::Split | S::Scheduled, E::FulfillmentFailed) => {
                S::FulfillmentFailed
            }
            (status, event) => {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("an order in status {status} cannot take the event {event:?}"),
                ));
            }
        };
        Ok(next)
    }
}

/// Where an order ships to. Every field is personal data except the country.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShippingAddress {
    pub name: Personal<String>,
    pub line1: Personal<String>,
    pub city: Personal<String>,
    pub postal_code: Personal<String>,
    pub country: String,
}

impl ShippingAddress {
    pub const NAME_MAX_CHARS: usize = 100;
    pub const LINE1_MAX_CHARS: usize = 200;
    pub const CITY_MAX_CHARS: usize = 100;
    pub const POSTAL_CODE_MAX_CHARS: usize = 20;

    pub fn parse(
        name: &str,
        line1: &str,
        city: &str,
        postal_code: &str,
        country: &str,
    ) -> Result<Self> {
        let parsed = (|| {
            Ok(ShippingAddress {
                name: Personal::new(parse_text("name", name, Self::NAME_MAX_CHARS)?),
                line1: Personal::new(parse_text("line1", line1, Self::LINE1_MAX_CHARS)?),
                city: Personal::new(parse_text("city", city, Self::CITY_MAX_CHARS)?),
                postal_code: Personal::new(parse_text(
                    "postal_code",
                    postal_code,
                    Self::POSTAL_CODE_MAX_CHARS,
                )?),
                country: CountryCode::parse(country)?.into_string(),
            })
        })();
        parsed.map_err(|e: Error| e.in_field("shipping_address"))
    }

    pub fn country(&self) -> CountryCode {
        // Only ever built by `parse`, which checked it.
        CountryCode::parse(&self.country).unwrap_or_else(|_| unreachable_country())
    }
}

#[cold]
fn unreachable_country() -> CountryCode {
    CountryCode::parse("ZZ").unwrap_or_else(|_| unreachable!("ZZ is a well-formed code"))
}

/// How to reach the customer. Personal data.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Contact {
    pub email: Personal<String>,
    pub phone: Option<Personal<String>>,
}

impl Contact {
    pub const EMAIL_MAX_CHARS: usize = 254;
    pub const PHONE_MAX_CHARS: usize = 32;
    /// What [`Contact::parse`] accepts as an email (with `maxLength` = [`Self::EMAIL_MAX_CHARS`]):
    /// no white space nor control character, something before the first `@` and a `.` after it.
    pub const EMAIL_PATTERN: &str = concat!(
        "^[^@",
        control_class!(),
        space_class!(),
        "]+@[^",
        control_class!(),
        space_class!(),
        "]*\\.[^",
        control_class!(),
        space_class!(),
        "]*$"
    );
    /// What [`Contact::parse`] accepts as a phone number (with `maxLength` =
    /// [`Self::PHONE_MAX_CHARS`]): digits, spaces and `+ - ( )`, at least one digit.
    pub const PHONE_PATTERN: &str = r"^[0-9+ ()\-]*[0-9][0-9+ ()\-]*$";

    /// Checks the email and phone as received (the patterns above), then as text.
    pub fn parse(email: &str, phone: Option<&str>) -> Result<Self> {
        let parsed = (|| {
            let well_formed = !email.chars().any(char::is_whitespace)
                && email
                    .split_once('@')
                    .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
            let email = parse_text("email", email, Self::EMAIL_MAX_CHARS)?;
            if !well_formed {
                return Err(Error::invalid_field("email", "must be an email address"));
            }
            let phone = phone
                .map(|phone| {
                    let allowed =
                        |c: char| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '(' | ')');
                    let well_formed =
                        phone.chars().all(allowed) && phone.chars().any(|c| c.is_ascii_digit());
                    let phone = parse_text("phone", phone, Self::PHONE_MAX_CHARS)?;
                    if well_formed {
                        Ok(phone)
                    } else {
                        Err(Error::invalid_field(
                            "phone",
                            "may contain only digits, spaces and + - ( )",
                        ))
                    }
                })
                .transpose()?;
            Ok(Contact {
                email: Personal::new(email),
                phone: phone.map(Personal::new),
            })
        })();
        parsed.map_err(|e: Error| e.in_field("contact"))
    }
}

/// A validated order before it is priced and stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOrder {
    pub customer_id: CustomerId,
    pub currency: Currency,
    pub lines: Vec<(Sku, Quantity)>,
    pub shipping_address: ShippingAddress,
    pub contact: Contact,
}

impl NewOrder {
    pub const MAX_LINES: usize = 100;

    pub fn new(
        customer_id: CustomerId,
        currency: Currency,
        lines: Vec<(Sku, Quantity)>,
        shipping_address: ShippingAddress,
        contact: Contact,
    ) -> Result<Self> {
        if lines.is_empty() {
            return Err(Error::invalid_field("items", "must not be empty"));
        }
        if lines.len() > Self::MAX_LINES {
            return Err(Error::invalid_field(
                "items",
                format!("must have at most {} entries", Self::MAX_LINES),
            ));
        }
        Ok(NewOrder {
            customer_id,
            currency,
            lines,
            shipping_address,
            contact,
        })
    }
}

/// An order line with its price fixed at the time of ordering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLine {
    pub sku: Sku,
    pub quantity: Quantity,
    pub unit_price: Money,
    pub line_total: Money,
}

/// Prices `lines` in `currency` with `unit_price_of` (the catalogue); every product must be
/// priced in the order's currency. Returns the priced lines and the order total.
///
/// What the catalogue decides is not the request's fault (it may be valid in itself and fail
/// only now): a product that does not exist is `not_found`, one priced in another currency a
/// `conflict` — never `invalid_argument`, which says the request could never succeed.
pub fn price_lines(
    currency: Currency,
    lines: &[(Sku, Quantity)],
    unit_price_of: impl Fn(&Sku) -> Option<Money>,
) -> Result<(Vec<PricedLine>, Money)> {
    let mut total = Money::zero(currency);
    let mut priced = Vec::with_capacity(lines.len());
    for (index, (sku, quantity)) in lines.iter().enumerate() {
        let unit_price = unit_price_of(sku).ok_or_else(|| {
            Error::on_field(
                ErrorKind::NotFound,
                format!("items[{index}].sku"),
                format!("names no product: {sku} not found"),
            )
        })?;
        if unit_price.currency() != currency {
            return Err(Error::on_field(
                ErrorKind::Conflict,
                format!("items[{index}].sku"),
                format!(
                    "is priced in {}, the order is in {currency}",
                    unit_price.currency()
                ),
            ));
        }
        let line_total = unit_price.checked_mul(quantity.get())?;
        total = total.checked_add(line_total)?;
        priced.push(PricedLine {
            sku: sku.clone(),
            quantity: *quantity,
            unit_price,
            line_total,
        });
    }
    Ok((priced, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_through_its_name() {
        for status in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(status.as_str()).unwrap(), status);
        }
        assert!(OrderStatus::parse("lost").is_err());
    }

    #[test]
    fn the_happy_path_reaches_shipped() {
        let mut status = OrderStatus::PendingPayment;
        for event in [
            OrderEvent::PaymentSucceeded,
            OrderEvent::RiskApproved,
            OrderEvent::SplitIntoShipments,
            OrderEvent::ShipmentsScheduled,
            OrderEvent::AllShipmentsAccepted,
        ] {
            status = status.apply(event).unwrap();
        }
        assert_eq!(status, OrderStatus::Shipped);
    }

    #[test]
    fn only_unpaid_orders_can_be_cancelled() {
        assert_eq!(
            OrderStatus::PendingPayment
                .apply(OrderEvent::Cancel)
                .unwrap(),
            OrderStatus::Cancelled
        );
        for status in OrderStatus::ALL
            .into_iter()
            .filter(|s| *s != OrderStatus::PendingPayment)
        {
            let err = status.apply(OrderEvent::Cancel).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Conflict, "{status}");
        }
    }

    #[test]
    fn terminal_statuses_accept_no_event() {
        let events = [
            OrderEvent::PaymentSucceeded,
            OrderEvent::Cancel,
            OrderEvent::RiskApproved,
            OrderEvent::RiskRejected,
            OrderEvent::SplitIntoShipments,
            OrderEvent::ShipmentsScheduled,
            OrderEvent::AllShipmentsAccepted,
            OrderEvent::FulfillmentFailed,
        ];
        for status in OrderStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            for event in events {
                assert!(status.apply(event).is_err(), "{status} took {event:?}");
            }
        }
    }

    #[test]
    fn stages_cannot_be_skipped() {
        assert!(
            OrderStatus::PendingPayment
                .apply(OrderEvent::RiskApproved)
                .is_err()
        );
        assert!(
            OrderStatus::Paid
                .apply(OrderEvent::SplitIntoShipments)
                .is_err()
        );
        assert!(
            OrderStatus::RiskApproved
                .apply(OrderEvent::AllShipmentsAccepted)
                .is_err()
        );
        assert!(
            OrderStatus::PendingPayment
                .apply(OrderEvent::FulfillmentFailed)
                .is_err()
        );
        assert!(
            OrderStatus::PendingPayment
                .apply(OrderEvent::PaymentSucceeded)
                .and_then(|s| s.apply(OrderEvent::PaymentSucceeded))
                .is_err()
        );
    }

    #[test]
    fn addresses_are_normalised_and_limited_in_characters() {
        let address =
            ShippingAddress::parse("สมชาย ใจดี", "99 ถนนสุขุมวิท", "กรุงเทพ", "10110", "TH").unwrap();
        assert_eq!(address.country().as_str(), "TH");
        let err = ShippingAddress::parse(&"ก".repeat(101), "x", "y", "1", "TH").unwrap_err();
        assert_eq!(err.details[0].field, "shipping_address.name");
        assert!(ShippingAddress::parse(&"ก".repeat(100), "x", "y", "1", "TH").is_ok());
    }

    #[test]
    fn contacts_need_a_plausible_email_and_phone() {
        assert!(Contact::parse("a@example.com", Some("+66 2 123 4567")).is_ok());
        assert!(Contact::parse("a@example.com", None).is_ok());
        for bad in ["", "no-at", "@example.com", "a@nodot", "a b@example.com"] {
            assert!(Contact::parse(bad, None).is_err(), "{bad:?}");
        }
        let err = Contact::parse("a@example.com", Some("call me")).unwrap_err();
        assert_eq!(err.details[0].field, "contact.phone");
    }

    fn usd() -> Currency {
        Currency::parse("USD").unwrap()
    }

    #[test]
    fn lines_are_priced_and_totalled() {
        let lines = vec![
            (Sku::parse("A").unwrap(), Quantity::new(2).unwrap()),
            (Sku::parse("B").unwrap(), Quantity::new(1).unwrap()),
        ];
        let (priced, total) = price_lines(usd(), &lines, |sku| {
            let price = if sku.as_str() == "A" { 1999 } else { 500 };
            Some(Money::new(price, usd()).unwrap())
        })
        .unwrap();
        assert_eq!(priced[0].line_total.amount_minor(), 3998);
        assert_eq!(total.amount_minor(), 4498);
    }

    #[test]
    fn a_product_in_another_currency_is_refused() {
        let lines = vec![(Sku::parse("A").unwrap(), Quantity::new(1).unwrap())];
        let thb = Currency::parse("THB").unwrap();
        let err = price_lines(usd(), &lines, |_| Some(Money::new(100, thb).unwrap())).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Conflict);
        assert_eq!(err.details[0].field, "items[0].sku");
    }

    #[test]
    fn an_unknown_product_is_not_found() {
        let lines = vec![(Sku::parse("A").unwrap(), Quantity::new(1).unwrap())];
        let err = price_lines(usd(), &lines, |_| None).unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
        assert_eq!(err.details[0].field, "items[0].sku");
    }

    proptest::proptest! {
        /// Emails and phone numbers are accepted exactly when the document's schemas allow
        /// them (their pattern, the length as sent, and the length after NFC).
        #[test]
        fn contacts_are_their_schema(raw in crate::text::tests::edge_text()) {
            use unicode_normalization::UnicodeNormalization;
            let fits = |max: usize| raw.chars().count() <= max && raw.trim().nfc().count() <= max;
            let email = regex::Regex::new(Contact::EMAIL_PATTERN).unwrap();
            proptest::prop_assert_eq!(
                Contact::parse(&raw, None).is_ok(),
                email.is_match(&raw) && fits(Contact::EMAIL_MAX_CHARS),
                "email {:?}", raw
            );
            let phone = regex::Regex::new(Contact::PHONE_PATTERN).unwrap();
            proptest::prop_assert_eq!(
                Contact::parse("a@example.com", Some(&raw)).is_ok(),
                phone.is_match(&raw) && fits(Contact::PHONE_MAX_CHARS),
                "phone {:?}", raw
            );
        }
    }

    #[test]
    fn an_order_needs_between_one_and_max_lines() {
        let address = ShippingAddress::parse("n", "l", "c", "1", "TH").unwrap();
        let contact = Contact::parse("a@example.com", None).unwrap();
        let customer = CustomerId::parse("c1").unwrap();
        let empty = NewOrder::new(
            customer.clone(),
            usd(),
            vec![],
            address.clone(),
            contact.clone(),
        );
        assert!(empty.is_err());
        let line = (Sku::parse("A").unwrap(), Quantity::new(1).unwrap());
        let too_many = vec![line; NewOrder::MAX_LINES + 1];
        assert!(NewOrder::new(customer, usd(), too_many, address, contact).is_err());
    }
}
