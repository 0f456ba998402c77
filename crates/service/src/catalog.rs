//! The catalogue face: products, warehouses and stock.

use crate::Shared;
use crate::api::{
    MoneyDto, ProductInput, ProductView, StockEntryView, StockInput, StockView, WarehouseInput,
    WarehouseStockView, WarehouseView,
};
use crate::ports::CatalogApi;
use async_trait::async_trait;
use ordo_domain::ids::{CountryCode, Sku, WarehouseId};
use ordo_domain::money::{Currency, Money};
use ordo_domain::stock::OnHand;
use ordo_domain::text::parse_text;
use ordo_domain::{Error, Result};
use ordo_storage::now_ms;
use ordo_storage::records::{ProductRecord, StockRecord, WarehouseRecord};

/// The longest product name, in characters.
pub const PRODUCT_NAME_MAX_CHARS: usize = 200;

impl MoneyDto {
    /// Parses the amount of field `field` (`price`, `total`...).
    pub fn parse(&self, field: &str) -> Result<Money> {
        let currency = Currency::parse_field(&format!("{field}.currency"), &self.currency)?;
        Money::new_field(
            &format!("{field}.amount_minor"),
            self.amount_minor,
            currency,
        )
    }

    pub fn from_parts(amount_minor: i64, currency: &str) -> Self {
        MoneyDto {
            amount_minor,
            currency: currency.to_owned(),
        }
    }
}

impl ProductInput {
    /// Validates the product `sku` (from the path) and this body into the row to store.
    pub fn parse(&self, sku: &str) -> Result<ProductRecord> {
        let sku = Sku::parse(sku)?;
        let name = parse_text("name", &self.name, PRODUCT_NAME_MAX_CHARS)?;
        let price = self.price.parse("price")?;
        Ok(ProductRecord {
            sku: sku.into_string(),
            name,
            price_minor: price.amount_minor(),
            currency: price.currency().to_string(),
        })
    }
}

impl From<ProductRecord> for ProductView {
    fn from(record: ProductRecord) -> Self {
        ProductView {
            price: MoneyDto::from_parts(record.price_minor, &record.currency),
            sku: record.sku,
            name: record.name,
        }
    }
}

impl From<StockRecord> for StockEntryView {
    fn from(record: StockRecord) -> Self {
        StockEntryView {
            available: record.on_hand - record.reserved,
            sku: record.sku,
            warehouse: record.warehouse,
            on_hand: record.on_hand,
            reserved: record.reserved,
        }
    }
}

/// The catalogue face (the `inventory` role). Cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    shared: Shared,
}

impl Catalog {
    pub(crate) fn new(shared: Shared) -> Catalog {
        Catalog { shared }
    }
}

#[async_trait]
impl CatalogApi for Catalog {
    #[tracing::instrument(skip_all, fields(sku = %sku))]
    async fn put_product(&self, sku: &str, input: ProductInput) -> Result<ProductView> {
        let record = input.parse(sku)?;
        self.shared.db.upsert_product(&record, now_ms()).await?;
        Ok(record.into())
    }

    #[tracing::instrument(skip_all, fields(sku = %sku))]
    async fn product(&self, sku: &str) -> Result<ProductView> {
        let sku = Sku::parse(sku)?;
        self.shared
            .db
            .product_cached(sku.as_str())
            .await?
            .map(|product| ProductView::from(ProductRecord::clone(&product)))
            .ok_or_else(|| Error::not_found(format!("product {sku}")))
    }

    #[tracing::instrument(skip_all, fields(warehouse = %id))]
    async fn put_warehouse(&self, id: &str, input: WarehouseInput) -> Result<WarehouseView> {
        let id = WarehouseId::parse(id)?;
        let country = CountryCode::parse(&input.country)?;
        let record = WarehouseRecord {
            id: id.into_string(),
            country: country.into_string(),
        };
        self.shared.db.upsert_warehouse(&record, now_ms()).await?;
        Ok(WarehouseView {
            id: record.id,
            country: record.country,
        })
    }

    #[tracing::instrument(skip_all, fields(sku = %sku, warehouse = %warehouse))]
    async fn put_stock(
        &self,
        sku: &str,
        warehouse: &str,
        input: StockInput,
    ) -> Result<StockEntryView> {
        let sku = Sku::parse(sku)?;
        let warehouse = WarehouseId::parse(warehouse)?;
        let on_hand = OnHand::new(input.on_hand)?;
        let record = self
            .shared
            .db
            .set_on_hand(sku.as_str(), warehouse.as_str(), on_hand.get(), now_ms())
            .await?;
        Ok(record.into())
    }

    #[tracing::instrument(skip_all, fields(sku = %sku))]
    async fn stock(&self, sku: &str) -> Result<StockView> {
        let sku = Sku::parse(sku)?;
        if self.shared.db.product(sku.as_str()).await?.is_none() {
            return Err(Error::not_found(format!("product {sku}")));
        }
        let warehouses: Vec<WarehouseStockView> = self
            .shared
            .db
            .stock_of(sku.as_str())
            .await?
            .into_iter()
            .map(|r| WarehouseStockView {
                available: r.on_hand - r.reserved,
                warehouse: r.warehouse,
                on_hand: r.on_hand,
                reserved: r.reserved,
            })
            .collect();
        Ok(StockView {
            available: warehouses.iter().map(|w| w.available).sum(),
            sku: sku.into_string(),
            warehouses,
        })
    }

    async fn ready(&self) -> Result<()> {
        self.shared.ready().await
    }
}
