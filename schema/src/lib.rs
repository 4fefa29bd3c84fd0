//! Placeholder while the schema crate is written.
