//! Roles apart: which parts of ordo this process runs, and how it finds the processes that run
//! the others (a static list of peers, or etcd).

use crate::{ConfigError, syntax};
use serde::{Deserialize, Deserializer};
use std::collections::HashMap;

/// A part of ordo that can run in its own process (`ordo serve --roles ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// The public REST API (the gRPC API runs in every process).
    Edge,
    /// Orders: create, read, list, cancel, timelines.
    Orders,
    /// Products, warehouses and stock.
    Inventory,
    /// Payment intents and provider callbacks.
    Payments,
    /// The outbox relay, the fulfillment pipeline's consumers, the payment-timeout job.
    Workers,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Edge,
        Role::Orders,
        Role::Inventory,
        Role::Payments,
        Role::Workers,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Edge => "edge",
            Role::Orders => "orders",
            Role::Inventory => "inventory",
            Role::Payments => "payments",
            Role::Workers => "workers",
        }
    }

    /// Parses a comma-separated list (`edge,orders`); empty entries are ignored, `all` means
    /// every role.
    pub fn parse_list(raw: &str) -> Result<Vec<Role>, ConfigError> {
        let invalid = |reason| ConfigError::Invalid {
            name: "ORDO_ROLES",
            reason,
        };
        let mut roles = Vec::new();
        for name in crate::env::comma_separated(raw) {
            if name == "all" {
                roles.extend(Role::ALL);
                continue;
            }
            let role = Role::ALL
                .into_iter()
                .find(|r| r.as_str() == name)
                .ok_or_else(|| {
                    invalid(format!(
                        "{name:?} is not a role (edge, orders, inventory, payments, workers, all)"
                    ))
                })?;
            roles.push(role);
        }
        roles.sort();
        roles.dedup();
        if roles.is_empty() {
            return Err(invalid("names no role".to_owned()));
        }
        Ok(roles)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Topology {
    /// The roles this process runs (`ORDO_ROLES` or `--roles`; default: all of them).
    #[serde(deserialize_with = "roles")]
    pub roles: Vec<Role>,
    /// How processes find each other's roles: unset or `static` (the `ORDO_PEERS_*` lists),
    /// or `etcd://host:port[,host:port]` (`ORDO_DISCOVERY`).
    #[serde(rename = "discovery")]
    pub discovery_url: Option<String>,
    /// The etcd key prefix, so that deployments can share an etcd (`ORDO_DISCOVERY_NAMESPACE`).
    #[serde(deserialize_with = "syntax::namespace")]
    pub discovery_namespace: String,
    /// The static list of the roles this process calls (`ORDO_PEERS_ORDERS`, ...,
    /// comma-separated gRPC addresses); see [`Topology::peers`].
    #[serde(deserialize_with = "syntax::comma_list")]
    pub peers_orders: Vec<String>,
    #[serde(deserialize_with = "syntax::comma_list")]
    pub peers_inventory: Vec<String>,
    #[serde(deserialize_with = "syntax::comma_list")]
    pub peers_payments: Vec<String>,
    /// The gRPC address other processes reach this one at (`ORDO_GRPC_ADVERTISE_ADDR`;
    /// default: the address bound).
    pub grpc_advertise_addr: Option<String>,
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            roles: Role::ALL.to_vec(),
            discovery_url: None,
            discovery_namespace: syntax::DEFAULT_NAMESPACE.to_owned(),
            peers_orders: Vec::new(),
            peers_inventory: Vec::new(),
            peers_payments: Vec::new(),
            grpc_advertise_addr: None,
        }
    }
}

impl Topology {
    /// The static list as discovery takes it: role name → gRPC addresses, roles without any
    /// left out.
    pub fn peers(&self) -> HashMap<String, Vec<String>> {
        [
            (Role::Orders, &self.peers_orders),
            (Role::Inventory, &self.peers_inventory),
            (Role::Payments, &self.peers_payments),
        ]
        .into_iter()
        .filter(|(_, addresses)| !addresses.is_empty())
        .map(|(role, addresses)| (role.as_str().to_owned(), addresses.clone()))
        .collect()
    }
}

fn roles<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Role>, D::Error> {
    let raw = String::deserialize(d)?;
    Role::parse_list(&raw).map_err(|error| match error {
        ConfigError::Invalid { reason, .. } => serde::de::Error::custom(reason),
        other => serde::de::Error::custom(other),
    })
}
