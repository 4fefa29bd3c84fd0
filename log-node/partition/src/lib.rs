//! Placeholder while the partition crate is written.
