//! The real nats-server helper of the bus crate.

// Not every test binary that includes `support` starts a server.
#[allow(unused_imports)]
pub use chorus_bus::testing::NatsServer;
