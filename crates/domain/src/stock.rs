//! Quantities, stock levels, and the allocation of an order's lines to warehouses.
//!
//! Allocation is a pure function over a snapshot of availability. The adapter that calls it must
//! hold that snapshot stable (row locks, or SQLite's single writer) while it applies the result,
//! and applies it with conditional updates so that a wrong snapshot can never oversell.

use crate::error::{Error, ErrorKind, Result};
use crate::ids::{CountryCode, Sku, WarehouseId};
use std::collections::{BTreeMap, HashMap};

/// How many units of one SKU an order line asks for: 1..=[`Quantity::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity(u32);

impl Quantity {
    pub const MAX: u32 = 10_000;

    pub fn new(value: i64) -> Result<Self> {
        Self::new_field("quantity", value)
    }

    pub fn new_field(field: &str, value: i64) -> Result<Self> {
        match u32::try_from(value) {
            Ok(v) if (1..=Self::MAX).contains(&v) => Ok(Quantity(v)),
            _ => Err(Error::invalid_field(
                field,
                format!("must be between 1 and {}", Self::MAX),
            )),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// Units physically in a warehouse: 0..=[`OnHand::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct OnHand(i64);

impl OnHand {
    pub const MAX: i64 = 1_000_000_000_000;

    pub fn new(value: i64) -> Result<Self> {
        if (0..=Self::MAX).contains(&value) {
            Ok(OnHand(value))
        } else {
            Err(Error::invalid_field(
                "on_hand",
                format!("must be between 0 and {}", Self::MAX),
            ))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// One warehouse's stock of one SKU, as read from storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockLevel {
    pub warehouse: WarehouseId,
    pub country: CountryCode,
    pub on_hand: i64,
    pub reserved: i64,
}

impl StockLevel {
    pub fn available(&self) -> i64 {
        (self.on_hand - self.reserved).max(0)
    }
}

/// Units of one SKU reserved in one warehouse for one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub sku: Sku,
    pub warehouse: WarehouseId,
    pub quantity: i64,
}

/// Chooses the warehouses that serve `lines` for an order shipped to `ship_to`.
///
/// For each SKU it takes from warehouses in the shipping country first, then from those with the
/// most available units (ties broken by warehouse id, so the result is deterministic), and
/// splits a line across warehouses when no single one can serve it. The result is grouped by
/// (sku, warehouse) and sorted that way: the fixed order in which adapters lock and update rows.
pub fn allocate(
    lines: &[(Sku, Quantity)],
    stock: &HashMap<Sku, Vec<StockLevel>>,
    ship_to: &CountryCode,
) -> Result<Vec<Allocation>> {
    let mut wanted: BTreeMap<&Sku, i64> = BTreeMap::new();
    for (sku, quantity) in lines {
        *wanted.entry(sku).or_default() += i64::from(quantity.get());
    }

    let mut allocations = Vec::new();
    let mut short = Vec::new();
    for (sku, mut remaining) in wanted {
        let mut levels: Vec<&StockLevel> = stock
            .get(sku)
            .map(|levels| levels.iter().filter(|l| l.available() > 0).collect())
            .unwrap_or_default();
        levels.sort_by(|a, b| {
            let domestic = |l: &StockLevel| l.country == *ship_to;
            domestic(b)
                .cmp(&domestic(a))
                .then(b.available().cmp(&a.available()))
                .then(a.warehouse.cmp(&b.warehouse))
        });
        let mut taken = Vec::new();
        for level in levels {
            if remaining == 0 {
                break;
            }
            let take = remaining.min(level.available());
            taken.push(Allocation {
                sku: sku.clone(),
                warehouse: level.warehouse.clone(),
                quantity: take,
            });
            remaining -= take;
        }
        if remaining > 0 {
            short.push(sku.as_str().to_owned());
        } else {
            allocations.extend(taken);
        }
    }

    if !short.is_empty() {
        return Err(insufficient_stock(&short));
    }
    allocations.sort_by(|a, b| (&a.sku, &a.warehouse).cmp(&(&b.sku, &b.warehouse)));
    Ok(allocations)
}

/// The error for an order that cannot be fully reserved; names the SKUs that are short.
pub fn insufficient_stock(skus: &[String]) -> Error {
    let mut error = Error::new(
        ErrorKind::InsufficientStock,
        format!("not enough stock for: {}", skus.join(", ")),
    );
    error.details = skus
        .iter()
        .map(|sku| crate::error::FieldViolation {
            field: "items".into(),
            description: format!("insufficient stock for sku {sku}"),
        })
        .collect();
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sku(s: &str) -> Sku {
        Sku::parse(s).unwrap()
    }
    fn level(warehouse: &str, country: &str, on_hand: i64, reserved: i64) -> StockLevel {
        StockLevel {
            warehouse: WarehouseId::parse(warehouse).unwrap(),
            country: CountryCode::parse(country).unwrap(),
            on_hand,
            reserved,
        }
    }
    fn q(n: i64) -> Quantity {
        Quantity::new(n).unwrap()
    }
    fn th() -> CountryCode {
        CountryCode::parse("TH").unwrap()
    }

    #[test]
    fn quantities_outside_1_to_max_are_rejected() {
        for bad in [0, -1, i64::from(Quantity::MAX) + 1, i64::MAX, i64::MIN] {
            assert!(Quantity::new(bad).is_err(), "{bad}");
        }
        assert_eq!(Quantity::new(1).unwrap().get(), 1);
    }

    #[test]
    fn the_shipping_country_is_preferred_over_a_fuller_warehouse() {
        let stock = HashMap::from([(
            sku("A"),
            vec![level("de-1", "DE", 100, 0), level("th-1", "TH", 5, 0)],
        )]);
        let got = allocate(&[(sku("A"), q(3))], &stock, &th()).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].warehouse.as_str(), "th-1");
    }

    #[test]
    fn abroad_the_warehouse_with_most_available_wins() {
        let stock = HashMap::from([(
            sku("A"),
            vec![level("de-1", "DE", 10, 8), level("fr-1", "FR", 10, 0)],
        )]);
        let got = allocate(&[(sku("A"), q(2))], &stock, &th()).unwrap();
        assert_eq!(got[0].warehouse.as_str(), "fr-1");
    }

    #[test]
    fn a_line_is_split_across_warehouses_when_none_holds_enough() {
        let stock = HashMap::from([(
            sku("A"),
            vec![level("de-1", "DE", 3, 0), level("th-1", "TH", 2, 0)],
        )]);
        let got = allocate(&[(sku("A"), q(5))], &stock, &th()).unwrap();
        let by_wh: Vec<_> = got
            .iter()
            .map(|a| (a.warehouse.as_str(), a.quantity))
            .collect();
        assert_eq!(by_wh, vec![("de-1", 3), ("th-1", 2)]);
    }

    #[test]
    fn repeated_lines_of_one_sku_are_reserved_together() {
        let stock = HashMap::from([(sku("A"), vec![level("th-1", "TH", 3, 0)])]);
        assert!(allocate(&[(sku("A"), q(2)), (sku("A"), q(2))], &stock, &th()).is_err());
        let got = allocate(&[(sku("A"), q(1)), (sku("A"), q(2))], &stock, &th()).unwrap();
        assert_eq!(got[0].quantity, 3);
    }

    #[test]
    fn reserved_units_are_not_available() {
        let stock = HashMap::from([(sku("A"), vec![level("th-1", "TH", 3, 3)])]);
        let err = allocate(&[(sku("A"), q(1))], &stock, &th()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InsufficientStock);
    }

    #[test]
    fn an_unknown_sku_is_insufficient_stock_naming_it() {
        let err = allocate(&[(sku("NOPE"), q(1))], &HashMap::new(), &th()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InsufficientStock);
        assert!(err.message.contains("NOPE"));
    }

    #[test]
    fn allocations_come_sorted_by_sku_then_warehouse() {
        let stock = HashMap::from([
            (
                sku("B"),
                vec![level("w2", "TH", 1, 0), level("w1", "TH", 1, 0)],
            ),
            (sku("A"), vec![level("w9", "TH", 5, 0)]),
        ]);
        let got = allocate(&[(sku("B"), q(2)), (sku("A"), q(1))], &stock, &th()).unwrap();
        let keys: Vec<_> = got
            .iter()
            .map(|a| (a.sku.as_str(), a.warehouse.as_str()))
            .collect();
        assert_eq!(keys, vec![("A", "w9"), ("B", "w1"), ("B", "w2")]);
    }
}
