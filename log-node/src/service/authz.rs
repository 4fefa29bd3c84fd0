//! Who may make which client API request: a pure function of the caller's
//! role (from its certificate, see `network::tls`) and the request.
//!
//! | request | node | edge | projector | operator | analyst |
//! | --- | --- | --- | --- | --- | --- |
//! | `Append` | | ✓ | | | |
//! | `Read`, `Tail` | ✓ | ✓ | ✓ | ✓ | ✓ |
//! | `Status` | ✓ | ✓ | ✓ | ✓ | ✓ |
//! | `ChangeVoters` | | | | ✓ | |
//! | `AddLearner`, `RemoveVoter`, `PromoteLearner` | itself only | | | ✓ | |
//! | `CommitOffsets` (named consumers) | | | ✓ | ✓ | ✓ |
//!
//! Appends come from edges only: an edge sets each command's `origin` from
//! the device it authenticated, so only an edge may speak for a user.
//! Nodes read, and step down from and rejoin a group *as themselves*, to
//! re-seed a damaged replica from their peers (`service::reseed`); a node
//! cannot touch another node's membership.
//!
//! Named consumers' offsets (issue 13) are committed and read by the
//! processes that consume: projectors, operators' and analysts' tools
//! (`chorus tail --consumer`). Edges may not: they speak for users, and a commit speaks
//! for no user (its command has an all-zero origin, made by the node). An
//! `Append` that carries a `CommitOffsets` command is refused from every
//! client ([`superseded`]): commits come through `CommitOffsets` only.

use chorus_schema::{CommandBody, Request};

use crate::network::tls::{Principal, Role};

/// Whether `who` may make `request`.
pub fn allows(who: &Principal, request: &Request) -> bool {
    let itself = |node: &chorus_schema::NodeId| who.node_id() == Some(node.0);
    match request {
        Request::Append { .. } => who.role == Role::Edge,
        Request::Read { .. } | Request::Tail { .. } | Request::Status => true,
        Request::ChangeVoters { .. } => who.role == Role::Operator,
        Request::CommitOffsets { .. } => matches!(who.role, Role::Projector | Role::Operator | Role::Analyst),
        Request::AddLearner { node, .. } | Request::RemoveVoter { node, .. } | Request::PromoteLearner { node, .. } => {
            who.role == Role::Operator || itself(node)
        }
    }
}

/// Why a command is refused at admission from every client, if it is: the
/// account commands that `RegisterDevice` superseded. `RegisterDevice`
/// registers the user, links the device and opens its session at once and
/// checks the registration PIN; `CreateSession` or `LinkDevice` on their own
/// would open a session on an account without it (say, from a stolen edge
/// certificate). No edge sends them any more; the state machine still applies
/// them where older log entries hold them, so replicas and replays agree.
///
/// A `LinkDevice` **with** a token hash is a pairing (issue 12): a logged-in
/// device of the user links a new one with a one-time code, and the edge
/// holding the new device appends the link in the linking device's name. It
/// is admitted; the user partition checks that the linking device is linked
/// and logged in. Like every append, it rests on the edge's identity.
pub fn superseded(body: &CommandBody) -> Option<&'static str> {
    match body {
        CommandBody::LinkDevice { token_hash: Some(_), .. } => None,
        CommandBody::RegisterUser { .. } | CommandBody::LinkDevice { .. } | CommandBody::CreateSession { .. } => {
            Some("superseded by RegisterDevice (which checks the registration PIN): refused from every client")
        }
        CommandBody::CommitOffsets { .. } => {
            Some("a consumer's offsets are committed by the CommitOffsets request, never by an append")
        }
        _ => None,
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
        Request::CommitOffsets { .. } => "commit-offsets",
    }
}

#[cfg(test)]
mod tests {
    use chorus_schema::{GroupId, NodeId, PartitionId};

    use super::*;

    fn requests() -> Vec<Request> {
        vec![
            Request::Append { commands: Vec::new() },
            Request::Read { partition: PartitionId(0), from: chorus_schema::Offset(0), limit: 1 },
            Request::Tail { partition: PartitionId(0), from: chorus_schema::Offset(0) },
            Request::Status,
            Request::AddLearner { group: GroupId(0), node: NodeId(4), raft_addr: "a".into(), client_addr: "b".into() },
            Request::ChangeVoters { group: GroupId(0), voters: vec![NodeId(1)] },
            Request::RemoveVoter { group: GroupId(0), node: NodeId(1) },
            Request::PromoteLearner { group: GroupId(0), node: NodeId(1) },
            Request::CommitOffsets { consumer: "c1".into(), offsets: vec![], reset: false },
        ]
    }

    fn principal(role: Role) -> Principal {
        // Node 9: the requests above are about node 1 and 4, not itself.
        if role == Role::Node {
            Principal::node(9)
        } else {
            Principal::new(role, "x").unwrap()
        }
    }

    #[test]
    fn the_table_of_the_module_docs() {
        let mut allowed: Vec<(Role, &str)> = Vec::new();
        for role in Role::ALL {
            for r in requests() {
                if allows(&principal(role), &r) {
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
            if matches!(role, Role::Projector | Role::Operator | Role::Analyst) {
                expected.push((role, "commit-offsets"));
            }
        }
        assert_eq!(allowed, expected);
    }

    #[test]
    fn the_superseded_account_commands_are_refused() {
        use chorus_schema::{DeviceId, UserId};
        let session = CommandBody::CreateSession { device: DeviceId(1), token_hash: [0; 32] };
        let link =
            CommandBody::LinkDevice { device: DeviceId(1), identity_key: vec![1], name: "x".into(), token_hash: None };
        let user = CommandBody::RegisterUser { phone: "+1".into() };
        assert!([session, link, user].iter().all(|b| superseded(b).is_some()));
        let send = CommandBody::SendDirect { recipient: UserId(2), ciphertext: vec![1], media: None };
        let register = CommandBody::RegisterDevice {
            phone: "+1".into(),
            device: DeviceId(1),
            identity_key: vec![1],
            name: "x".into(),
            token_hash: [0; 32],
            pin_hash: None,
        };
        assert!(superseded(&send).is_none() && superseded(&register).is_none());
        let pairing = CommandBody::LinkDevice {
            device: DeviceId(1),
            identity_key: vec![1],
            name: "x".into(),
            token_hash: Some([1; 32]),
        };
        assert!(superseded(&pairing).is_none(), "a pairing link is admitted");
    }

    #[test]
    fn a_node_changes_its_own_membership_only() {
        let me = Principal::node(4);
        let add_me =
            Request::AddLearner { group: GroupId(0), node: NodeId(4), raft_addr: "a".into(), client_addr: "b".into() };
        assert!(allows(&me, &add_me));
        assert!(allows(&me, &Request::RemoveVoter { group: GroupId(0), node: NodeId(4) }));
        assert!(allows(&me, &Request::PromoteLearner { group: GroupId(0), node: NodeId(4) }));
        assert!(!allows(&me, &Request::RemoveVoter { group: GroupId(0), node: NodeId(1) }));
        assert!(!allows(&me, &Request::ChangeVoters { group: GroupId(0), voters: vec![NodeId(4)] }));
        // An edge named "4" is no node 4.
        assert!(!allows(&Principal::new(Role::Edge, "4").unwrap(), &add_me));
    }
}
