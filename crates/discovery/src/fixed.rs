//! The static backend: the members of each role come from configuration and never change.
//!
//! Each role's channel has its sender held here, so a receiver sees "unchanged" (not "closed")
//! for as long as the [`crate::Discovery`] lives, as an etcd-backed one would.

use crate::{Instance, Members, normalize_address};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub(crate) struct Fixed {
    roles: Arc<HashMap<String, watch::Sender<BTreeSet<Instance>>>>,
    /// The channel of every role nobody configured: one is enough, its (empty) value never
    /// changes.
    none: Arc<watch::Sender<BTreeSet<Instance>>>,
}

impl Fixed {
    pub(crate) fn new(members: HashMap<String, Vec<String>>) -> Fixed {
        let roles = members
            .into_iter()
            .map(|(role, addresses)| {
                let instances: BTreeSet<Instance> = addresses
                    .iter()
                    // A blank entry (a trailing comma in a list) is no member.
                    .filter(|address| !address.trim().is_empty())
                    .filter_map(|address| match normalize_address(address) {
                        Ok(address) => Some(address),
                        Err(error) => {
                            tracing::warn!(role, %error, "static discovery: address ignored");
                            None
                        }
                    })
                    .map(|address| Instance {
                        id: address.clone(),
                        address,
                    })
                    .collect();
                (role, watch::Sender::new(instances))
            })
            .collect();
        Fixed {
            roles: Arc::new(roles),
            none: Arc::new(watch::Sender::new(BTreeSet::new())),
        }
    }

    pub(crate) fn members(&self, role: &str) -> Members {
        self.roles.get(role).unwrap_or(&*self.none).subscribe()
    }
}
