//! Who may make which client API request: a pure function of the caller's
//! role (from its certificate, see `network::tls`) and the request.
//!
//! | request | node | edge | projector | operator |
//! | --- | --- | --- | --- | --- |
//! | `Append` | | ✓ | | |
//! | `Read`, `Tail` | ✓ | ✓ | ✓ | ✓ |
//! | `Status` | ✓ | ✓ | ✓ | ✓ |
//! | `AddLearner`, `ChangeVoters`, `RemoveVoter`, `PromoteLearner` | | | | ✓ |
//!
//! Appends come from edges only: an edge sets each command's `origin` from
//! the device it authenticated, so only an edge may speak for a user.
//! Nodes read to re-seed a damaged replica from their peers.

use chorus_schema::Request;

use crate::network::tls::Role;

/// Whether `role` may make `request`.
pub fn allows(role: Role, request: &Request) -> bool {
    match request {
        Request::Append { .. } => role == Role::Edge,
        Request::Read { .. } | Request::Tail { .. } | Request::Status => true,
        Request::AddLearner { .. }
        | Request::ChangeVoters { .. }
        | Request::RemoveVoter { .. }
        | Request::PromoteLearner { .. } => role == Role::Operator,
    }
}

/// A short name of the request, for refusals.
pub fn request_name(request: &Request) -> &'static str {
    match request {
        Request::Append { .. } => "append",
        Request::Read { .. } => "read",
        Request::Tail { .. } => "tail",
        Request::Status => "status",
        Request::AddLearner { .. } => "add-learner",
        Request::ChangeVoters { .. } => "change-voters",
        Request::RemoveVoter { .. } => "remove-voter",
        Request::PromoteLearner { .. } => "promote-learner",
    }
}

#[cfg(test)]
mod tests {
    use chorus_schema::{GroupId, NodeId, PartitionId};

    use super::*;

    fn requests() -> Vec<Request> {
        vec![
            Request::Append { commands: Vec::new() },
            Request::Read { partition: PartitionId(0), from: 0, limit: 1 },
            Request::Tail { partition: PartitionId(0), from: 0 },
            Request::Status,
            Request::AddLearner { group: GroupId(0), node: NodeId(4), raft_addr: "a".into(), client_addr: "b".into() },
            Request::ChangeVoters { group: GroupId(0), voters: vec![NodeId(1)] },
            Request::RemoveVoter { group: GroupId(0), node: NodeId(1) },
            Request::PromoteLearner { group: GroupId(0), node: NodeId(1) },
        ]
    }

    #[test]
    fn the_table_of_the_module_docs() {
        let mut allowed: Vec<(Role, &str)> = Vec::new();
        for role in Role::ALL {
            for r in requests() {
                if allows(role, &r) {
                    allowed.push((role, request_name(&r)));
                }
            }
        }
        let reads = ["read", "tail", "status"];
        let mut expected: Vec<(Role, &str)> = Vec::new();
        for role in Role::ALL {
            if role == Role::Edge {
                expected.push((role, "append"));
            }
            expected.extend(reads.iter().map(|r| (role, *r)));
            if role == Role::Operator {
                expected.extend(["add-learner", "change-voters", "remove-voter", "promote-learner"].map(|r| (role, r)));
            }
        }
        assert_eq!(allowed, expected);
    }
}
