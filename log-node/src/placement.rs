//! Which Raft group hosts which partition.
//!
//! Partitions are the unit of ordering and reading (a chat's seqs, a user's
//! devices, per-partition offsets); Raft groups are the unit of replication.
//! A cluster runs `P` partitions on `G` groups, `G` small (one per node by
//! default): every group's leader merges the appends of all its partitions
//! into few large entries, and fewer active groups means fuller entries.
//!
//! The initial placement is round robin (`p mod G`), so that the partitions of
//! busy keys spread over the groups as keys spread over partitions. Moving a
//! partition to another group, or splitting a group, is designed (see
//! ARCHITECTURE.md, "Partitions on fewer Raft groups") but has no tool yet: until
//! it has, the placement is a function of `(P, G)`, fixed for the cluster's life
//! like `P`, and a group's state machine refuses a snapshot that holds a
//! partition the placement puts elsewhere.

use chorus_schema::{GroupId, PartitionId};

/// The partition → group map of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    partitions: u16,
    groups: u16,
}

impl Placement {
    /// # Panics
    /// If `groups` is 0 or more than `partitions` (the config validates this).
    pub fn new(partitions: u16, groups: u16) -> Self {
        assert!(groups >= 1 && groups <= partitions, "{groups} groups for {partitions} partitions");
        Placement { partitions, groups }
    }

    pub fn partitions(&self) -> u16 {
        self.partitions
    }

    pub fn groups(&self) -> u16 {
        self.groups
    }

    /// The group hosting `p`; `None` for a partition the cluster does not have.
    pub fn group_of(&self, p: PartitionId) -> Option<GroupId> {
        (p.0 < self.partitions).then(|| GroupId(p.0 % self.groups))
    }

    /// The partitions `g` hosts, in id order (none for a group the cluster does not have).
    pub fn partitions_of(&self, g: GroupId) -> Vec<PartitionId> {
        if g.0 >= self.groups {
            return Vec::new();
        }
        (g.0..self.partitions).step_by(self.groups as usize).map(PartitionId).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_is_on_exactly_one_group() {
        for (p, g) in [(1u16, 1u16), (8, 3), (64, 3), (64, 64), (7, 2)] {
            let placement = Placement::new(p, g);
            let mut seen = vec![0; p as usize];
            for group in 0..g {
                let hosted = placement.partitions_of(GroupId(group));
                assert!(!hosted.is_empty());
                for part in hosted {
                    assert_eq!(placement.group_of(part), Some(GroupId(group)));
                    seen[part.0 as usize] += 1;
                }
            }
            assert!(seen.iter().all(|n| *n == 1), "{p} partitions on {g} groups: {seen:?}");
            assert_eq!(placement.group_of(PartitionId(p)), None);
            assert!(placement.partitions_of(GroupId(g)).is_empty());
        }
    }
}
