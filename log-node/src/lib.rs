//! chorus log-node (being written).
