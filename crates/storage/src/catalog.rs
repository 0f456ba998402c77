//! Products, warehouses and stock levels.

use crate::records::{ProductRecord, StockRecord, WarehouseRecord};
use crate::traced::Traced;
use crate::{Database, db_error};
use ordo_domain::{Error, Result};
use sqlx::Row;

impl Database {
    /// Creates or replaces a product.
    pub async fn upsert_product(&self, product: &ProductRecord, now_ms: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO products (sku, name, price_minor, currency, created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, $4, $5, $5)
             ON CONFLICT (sku) DO UPDATE SET name = excluded.name,
                 price_minor = excluded.price_minor, currency = excluded.currency,
                 updated_at_ms = excluded.updated_at_ms",
        )
        .bind(&product.sku)
        .bind(&product.name)
        .bind(product.price_minor)
        .bind(&product.currency)
        .bind(now_ms)
        .execute(self.writer())
        .traced(self.backend, "INSERT products")
        .await?;
        Ok(())
    }

    pub async fn product(&self, sku: &str) -> Result<Option<ProductRecord>> {
        let row =
            sqlx::query("SELECT sku, name, price_minor, currency FROM products WHERE sku = $1")
                .bind(sku)
                .fetch_optional(self.reader())
                .traced(self.backend, "SELECT products")
                .await?;
        row.map(|row| {
            Ok(ProductRecord {
                sku: row.try_get(0)?,
                name: row.try_get(1)?,
                price_minor: row.try_get(2)?,
                currency: row.try_get(3)?,
            })
        })
        .transpose()
        .map_err(db_error)
    }

    /// Creates or replaces a warehouse.
    pub async fn upsert_warehouse(&self, warehouse: &WarehouseRecord, now_ms: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO warehouses (id, country, created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, $3)
             ON CONFLICT (id) DO UPDATE SET country = excluded.country,
                 updated_at_ms = excluded.updated_at_ms",
        )
        .bind(&warehouse.id)
        .bind(&warehouse.country)
        .bind(now_ms)
        .execute(self.writer())
        .traced(self.backend, "INSERT warehouses")
        .await?;
        Ok(())
    }

    /// Sets the units on hand of `sku` in `warehouse`. Refused (`conflict`) when fewer than the
    /// units already reserved there: reservations are promises that stock must keep.
    pub async fn set_on_hand(
        &self,
        sku: &str,
        warehouse: &str,
        on_hand: i64,
        now_ms: i64,
    ) -> Result<StockRecord> {
        let mut tx = self.writer().begin().traced(self.backend, "BEGIN").await?;
        let product_exists = sqlx::query("SELECT 1 FROM products WHERE sku = $1")
            .bind(sku)
            .fetch_optional(&mut *tx)
            .traced(self.backend, "SELECT products")
            .await?
            .is_some();
        if !product_exists {
            return Err(Error::not_found(format!("product {sku}")));
        }
        let warehouse_exists = sqlx::query("SELECT 1 FROM warehouses WHERE id = $1")
            .bind(warehouse)
            .fetch_optional(&mut *tx)
            .traced(self.backend, "SELECT warehouses")
            .await?
            .is_some();
        if !warehouse_exists {
            return Err(Error::not_found(format!("warehouse {warehouse}")));
        }
        let row = sqlx::query(
            "INSERT INTO stock (sku, warehouse, on_hand, reserved, updated_at_ms)
             VALUES ($1, $2, $3, 0, $4)
             ON CONFLICT (sku, warehouse) DO UPDATE SET on_hand = excluded.on_hand,
                 updated_at_ms = excluded.updated_at_ms
             WHERE stock.reserved <= excluded.on_hand
             RETURNING on_hand, reserved",
        )
        .bind(sku)
        .bind(warehouse)
        .bind(on_hand)
        .bind(now_ms)
        .fetch_optional(&mut *tx)
        .traced(self.backend, "INSERT stock")
        .await?;
        let Some(row) = row else {
            return Err(Error::conflict(format!(
                "on_hand {on_hand} is below the units already reserved for {sku} in {warehouse}"
            )));
        };
        let record = StockRecord {
            sku: sku.to_owned(),
            warehouse: warehouse.to_owned(),
            on_hand: row.try_get(0).map_err(db_error)?,
            reserved: row.try_get(1).map_err(db_error)?,
        };
        tx.commit().traced(self.backend, "COMMIT").await?;
        Ok(record)
    }

    /// Stock of `sku` in every warehouse that has a row for it, by warehouse id.
    pub async fn stock_of(&self, sku: &str) -> Result<Vec<StockRecord>> {
        let rows = sqlx::query(
            "SELECT warehouse, on_hand, reserved FROM stock WHERE sku = $1 ORDER BY warehouse",
        )
        .bind(sku)
        .fetch_all(self.reader())
        .traced(self.backend, "SELECT stock")
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(StockRecord {
                    sku: sku.to_owned(),
                    warehouse: row.try_get(0)?,
                    on_hand: row.try_get(1)?,
                    reserved: row.try_get(2)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db_error)
    }
}
