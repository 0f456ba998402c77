//! SQLite group commit: concurrent write transactions share commits, yet each keeps its own
//! outcome — a committed one is durable when `commit` returns, one dropped midway leaves
//! nothing behind and does not disturb the others of its group.

use ordo_storage::Database;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transactions_commit_in_groups_each_with_its_own_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/group.db", dir.path().display());
    let db = Arc::new(Database::connect(&url, 2).await.unwrap());
    db.migrate().await.unwrap();

    let tasks = (0..300).map(|i| {
        let db = Arc::clone(&db);
        tokio::spawn(async move {
            let mut tx = db.begin().await.unwrap();
            tx.claim_idempotency_key(&format!("key-{i}"), "hash", &format!("ord-{i}"), 1)
                .await
                .unwrap();
            tokio::task::yield_now().await;
            if i % 7 == 0 {
                drop(tx); // rolled back: the key must not exist
                false
            } else {
                tx.commit().await.unwrap();
                // Durable now: a fresh connection sees it.
                assert!(
                    db.idempotency_key(&format!("key-{i}"))
                        .await
                        .unwrap()
                        .is_some()
                );
                true
            }
        })
    });
    let committed: Vec<bool> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    let other = Database::connect(&url, 1).await.unwrap();
    for (i, committed) in committed.iter().enumerate() {
        let found = other.idempotency_key(&format!("key-{i}")).await.unwrap();
        assert_eq!(found.is_some(), *committed, "key-{i}");
    }
    let total: Vec<Vec<i64>> = other
        .query_unchecked("SELECT COUNT(*) FROM idempotency_keys")
        .await
        .unwrap();
    assert_eq!(total[0][0], committed.iter().filter(|c| **c).count() as i64);
}
