//! chorus jepsen (not yet built).
