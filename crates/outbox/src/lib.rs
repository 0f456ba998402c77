//! How events leave a state change and reach the code that reacts to them.
//!
//! Layout:
//! - [`event`]: the envelope every transport carries (id, topic, order id, JSON payload,
//!   trace-context headers), and [`event::new_event`] to append one to the outbox in a write.
//! - [`relay`]: claims committed outbox rows, publishes each in a PRODUCER span that continues
//!   the trace of the step that wrote it, and marks it published only after the transport's
//!   acknowledgement; retries with backoff, dead-letters after [`relay::MAX_ATTEMPTS`].
//! - [`transport`]: where the relay publishes, chosen by [`transport::start`] from
//!   `ORDO_BROKER_URL`: [`transport::InProcess`] (the default) hands
//!   each event to this process's consumers and acknowledges once they have committed.
//! - [`consumer`]: runs a [`consumer::Consumer`] for one event in a CONSUMER span, inside a
//!   transaction that also records the event id, so a redelivery changes nothing.
//!
//! Invariant: an event exists only if the transaction that caused it committed, and it is
//! acknowledged only after its consumers committed: nothing is lost in a crash, duplicates are
//! absorbed by the processed-event ids.

pub mod consumer;
pub mod event;
pub mod relay;
pub mod transport;

pub use event::{Delivery, Envelope, new_event, outbox_event};
pub use relay::{Relay, Wakeup};
