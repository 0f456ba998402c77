//! The default transport: hands each event to this process's consumers, by topic, and
//! acknowledges once every subscribed consumer committed.

use super::{PublishFuture, Transport};
use crate::consumer::ConsumerRunner;
use crate::event::Envelope;
use std::collections::HashMap;
use std::sync::Arc;

/// Hands events to the consumers of this process, by topic.
#[derive(Clone, Default)]
pub struct InProcess {
    subscribers: Arc<HashMap<String, Vec<Arc<ConsumerRunner>>>>,
}

impl InProcess {
    pub fn new(consumers: Vec<Arc<ConsumerRunner>>) -> Self {
        let mut subscribers: HashMap<String, Vec<Arc<ConsumerRunner>>> = HashMap::new();
        for consumer in consumers {
            for topic in consumer.topics() {
                subscribers
                    .entry((*topic).to_owned())
                    .or_default()
                    .push(Arc::clone(&consumer));
            }
        }
        InProcess {
            subscribers: Arc::new(subscribers),
        }
    }
}

impl Transport for InProcess {
    fn system(&self) -> &'static str {
        "ordo_in_process"
    }

    /// A publish runs the consumers: its failures are theirs.
    fn failures_are_outages(&self) -> bool {
        false
    }

    fn publish<'a>(&'a self, event: &'a Envelope) -> PublishFuture<'a> {
        Box::pin(async move {
            if let Some(consumers) = self.subscribers.get(&event.topic) {
                for consumer in consumers {
                    consumer.deliver_from(event, self.system()).await?;
                }
            }
            Ok(())
        })
    }
}
