//! Idempotency keys: a key names one order creation; a request repeated under it replays
//! that order instead of creating another.

use crate::sql::params;
use crate::{Database, WriteTx};
use ordo_domain::Result;

/// The request digest and order of an idempotency key.
pub(crate) const IDEMPOTENCY_KEY: &str =
    "SELECT request_hash, order_id FROM idempotency_keys WHERE key = $1";

/// What [`WriteTx::claim_idempotency_key`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// The key is new and now belongs to this transaction's order.
    Claimed,
    /// An earlier request holds the key.
    Existing {
        request_hash: String,
        order_id: String,
    },
}

impl Database {
    /// The idempotency key `key`, if an earlier request claimed it: its request digest and
    /// order id.
    pub async fn idempotency_key(&self, key: &str) -> Result<Option<(String, String)>> {
        let lease = self.read().await?;
        lease
            .conn()
            .query_opt(
                "SELECT idempotency_keys",
                IDEMPOTENCY_KEY,
                &params![key],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .await
    }
}

impl WriteTx {
    /// Claims `key` for `order_id`. A concurrent claim of the same key waits for this
    /// transaction (unique index) and then sees it as `Existing`.
    pub async fn claim_idempotency_key(
        &mut self,
        key: &str,
        request_hash: &str,
        order_id: &str,
        now_ms: i64,
    ) -> Result<KeyClaim> {
        let conn = self.conn();
        let inserted = conn
            .execute(
                "INSERT idempotency_keys",
                "INSERT INTO idempotency_keys (key, request_hash, order_id, created_at_ms)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING",
                &params![key, request_hash, order_id, now_ms],
            )
            .await?;
        if inserted == 1 {
            return Ok(KeyClaim::Claimed);
        }
        conn.query_one(
            "SELECT idempotency_keys",
            IDEMPOTENCY_KEY,
            &params![key],
            |row| {
                Ok(KeyClaim::Existing {
                    request_hash: row.get(0)?,
                    order_id: row.get(1)?,
                })
            },
        )
        .await
    }
}
