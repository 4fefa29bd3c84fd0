//! Test support: the shared real nats-server helper.

pub(crate) use chorus_testkit::nats::NatsServer;
