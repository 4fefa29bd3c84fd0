//! Test support: the shared real nats-server helper.

pub use chorus_testkit::nats::NatsServer;
