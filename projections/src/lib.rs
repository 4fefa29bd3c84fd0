//! chorus projections (not yet built).
