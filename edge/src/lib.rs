//! chorus edge (not yet built).
