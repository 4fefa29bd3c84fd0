//! The real nats-server helper of the testkit.

// Not every test binary that includes `support` starts a server.
#[allow(unused_imports)]
pub(crate) use chorus_testkit::nats::NatsServer;
