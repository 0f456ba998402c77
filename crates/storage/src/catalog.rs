//! Products, warehouses and stock levels.

use crate::Database;
use crate::records::{ProductRecord, StockRecord, WarehouseRecord};
use crate::sql::params;
use ordo_domain::{Error, Result};

impl Database {
    /// Creates or replaces a product.
    pub async fn upsert_product(&self, product: &ProductRecord, now_ms: i64) -> Result<()> {
        let lease = self.write().await?;
        lease
            .conn()
            .execute(
                "INSERT products",
                "INSERT INTO products (sku, name, price_minor, currency, created_at_ms,
                     updated_at_ms) VALUES ($1, $2, $3, $4, $5, $5)
                 ON CONFLICT (sku) DO UPDATE SET name = excluded.name,
                     price_minor = excluded.price_minor, currency = excluded.currency,
                     updated_at_ms = excluded.updated_at_ms",
                &params![
                    &product.sku,
                    &product.name,
                    product.price_minor,
                    &product.currency,
                    now_ms,
                ],
            )
            .await?;
        // After the write, before the caller answers: the next read sees it.
        self.products_cache.invalidate(&[&product.sku]).await;
        Ok(())
    }

    /// Product `sku` through the product cache (`GET /v1/products/{sku}`): entries at most a
    /// second old, unknown SKUs cached as absent as long, an upsert seen by the next read.
    pub async fn product_cached(&self, sku: &str) -> Result<Option<std::sync::Arc<ProductRecord>>> {
        self.products_cache
            .get_or_load(sku, || self.product(sku))
            .await
    }

    /// Product `sku` from the database (for decisions that must not be a second late).
    pub async fn product(&self, sku: &str) -> Result<Option<ProductRecord>> {
        let lease = self.read().await?;
        lease
            .conn()
            .query_opt(
                "SELECT products",
                "SELECT sku, name, price_minor, currency FROM products WHERE sku = $1",
                &params![sku],
                |row| {
                    Ok(ProductRecord {
                        sku: row.get(0)?,
                        name: row.get(1)?,
                        price_minor: row.get(2)?,
                        currency: row.get(3)?,
                    })
                },
            )
            .await
    }

    /// Whether warehouse `id` exists.
    pub async fn warehouse_exists(&self, id: &str) -> Result<bool> {
        let lease = self.read().await?;
        Ok(lease
            .conn()
            .query_opt(
                "SELECT warehouses",
                "SELECT 1 FROM warehouses WHERE id = $1",
                &params![id],
                |_| Ok(()),
            )
            .await?
            .is_some())
    }

    /// Creates or replaces a warehouse.
    pub async fn upsert_warehouse(&self, warehouse: &WarehouseRecord, now_ms: i64) -> Result<()> {
        let lease = self.write().await?;
        lease
            .conn()
            .execute(
                "INSERT warehouses",
                "INSERT INTO warehouses (id, country, created_at_ms, updated_at_ms)
                 VALUES ($1, $2, $3, $3)
                 ON CONFLICT (id) DO UPDATE SET country = excluded.country,
                     updated_at_ms = excluded.updated_at_ms",
                &params![&warehouse.id, &warehouse.country, now_ms],
            )
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
        let mut tx = self.begin().await?;
        let conn = tx.conn();
        let product_exists = conn
            .query_opt(
                "SELECT products",
                "SELECT 1 FROM products WHERE sku = $1",
                &params![sku],
                |_| Ok(()),
            )
            .await?
            .is_some();
        if !product_exists {
            return Err(Error::not_found(format!("product {sku}")));
        }
        let warehouse_exists = conn
            .query_opt(
                "SELECT warehouses",
                "SELECT 1 FROM warehouses WHERE id = $1",
                &params![warehouse],
                |_| Ok(()),
            )
            .await?
            .is_some();
        if !warehouse_exists {
            return Err(Error::not_found(format!("warehouse {warehouse}")));
        }
        let level = conn
            .query_opt(
                "INSERT stock",
                "INSERT INTO stock (sku, warehouse, on_hand, reserved, updated_at_ms)
                 VALUES ($1, $2, $3, 0, $4)
                 ON CONFLICT (sku, warehouse) DO UPDATE SET on_hand = excluded.on_hand,
                     updated_at_ms = excluded.updated_at_ms
                 WHERE stock.reserved <= excluded.on_hand
                 RETURNING on_hand, reserved",
                &params![sku, warehouse, on_hand, now_ms],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .await?;
        let Some((on_hand, reserved)) = level else {
            return Err(Error::conflict(format!(
                "on_hand {on_hand} is below the units already reserved for {sku} in {warehouse}"
            )));
        };
        tx.commit().await?;
        Ok(StockRecord {
            sku: sku.to_owned(),
            warehouse: warehouse.to_owned(),
            on_hand,
            reserved,
        })
    }

    /// Stock of `sku` in every warehouse that has a row for it, by warehouse id.
    pub async fn stock_of(&self, sku: &str) -> Result<Vec<StockRecord>> {
        let lease = self.read().await?;
        lease
            .conn()
            .query(
                "SELECT stock",
                "SELECT warehouse, on_hand, reserved FROM stock WHERE sku = $1
                 ORDER BY warehouse",
                &params![sku],
                |row| {
                    Ok(StockRecord {
                        sku: sku.to_owned(),
                        warehouse: row.get(0)?,
                        on_hand: row.get(1)?,
                        reserved: row.get(2)?,
                    })
                },
            )
            .await
    }
}
