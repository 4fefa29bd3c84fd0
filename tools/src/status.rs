//! The whole deployment at a glance, as `chorus status` prints it: the pure
//! part (no IO). [`assemble`] merges what the command gathered — each log
//! node's own status (or why it did not answer) and each scraped Prometheus
//! text (or why the scrape failed) — into one [`DeploymentStatus`];
//! [`render_text`] lays it out as tables. The IO (asking the nodes, GET
//! `/metrics`) is in `commands::status`.
//!
//! # Which node is believed
//! Every node reports every group it is in, but only the leader knows how far
//! each replica got. A group's row is the view of the node that says it leads
//! the group itself, with the highest term among such claims; when no node
//! that answered claims it, the highest-term view of any node that answered,
//! without replication progress. A partition's next offset is the highest any
//! node reports (offsets only grow, and each node counts committed events
//! only).
//!
//! # Metric names read (the contract with the processes' `/metrics`)
//! - `chorus_process_info{role="log-node|projector|edge|dev",id="…"} 1`: who
//!   serves the endpoint;
//! - `chorus_projector_next_offset{partition="N"}` (gauge): the projector's
//!   cursor in partition N, the offset of the next event it will fold;
//! - `chorus_edge_connections` (gauge): the edge's open client connections
//!   (summed over label sets, if any).
//!
//! An endpoint with projector cursors is shown as a projector and one with
//! the connections gauge as an edge (`chorus dev` serves both in one).

use std::collections::{BTreeMap, BTreeSet};

use chorus_schema::{GroupStatus, NodeStatus};
use serde::{Deserialize, Serialize};

/// Name of the gauge of a projector's cursor per partition.
pub const PROJECTOR_NEXT_OFFSET: &str = "chorus_projector_next_offset";
/// Name of the gauge of an edge's open connections.
pub const EDGE_CONNECTIONS: &str = "chorus_edge_connections";
/// Name of the info metric naming a process's role and id.
pub const PROCESS_INFO: &str = "chorus_process_info";

/// What asking one log node gave: its status, or why there is none.
#[derive(Clone, Debug)]
pub struct NodeProbe {
    /// The client API address asked.
    pub addr: String,
    pub result: Result<NodeStatus, String>,
}

/// What scraping one metrics endpoint gave: the Prometheus text, or why
/// there is none.
#[derive(Clone, Debug)]
pub struct ScrapeProbe {
    /// The `host:port` scraped (GET `http://{target}/metrics`).
    pub target: String,
    pub result: Result<String, String>,
}

/// The deployment as `chorus status --json` prints it (one JSON object).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentStatus {
    /// Every log node asked or named in a membership, by id.
    pub nodes: Vec<NodeReport>,
    /// Every Raft group, by id.
    pub groups: Vec<GroupReport>,
    /// Every partition, by id.
    pub partitions: Vec<PartitionReport>,
    /// Every metrics endpoint scraped, up or down.
    pub scrapes: Vec<ScrapeReport>,
    /// Every endpoint that reports projector cursors.
    pub projectors: Vec<ProjectorReport>,
    /// Every endpoint that reports edge connections.
    pub edges: Vec<EdgeReport>,
}

/// One log node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// Its id: from its own status, else from a membership naming its
    /// address; `None` for an address given on the command line that never
    /// answered and no membership names.
    pub id: Option<u64>,
    /// Its client API address.
    pub client_addr: String,
    /// Whether it answered the status request in time.
    pub reachable: bool,
    /// Why it did not, when it did not.
    pub error: Option<String>,
}

/// One Raft group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupReport {
    pub group: u16,
    /// Its leader, as the node believed (see the module doc) says.
    pub leader: Option<u64>,
    pub term: u64,
    /// The node whose view this row is; `None` when no node that hosts the
    /// group answered.
    pub reported_by: Option<u64>,
    /// Whether `reported_by` is the leader itself (only then are `commit_index`
    /// and the replicas' `matched` and `lag` known).
    pub from_leader: bool,
    /// The reporting node's last log index.
    pub last_log_index: u64,
    /// The highest log index a majority of voters hold, as the leader reports
    /// (the commit index, up to the current-term rule Raft adds).
    pub commit_index: Option<u64>,
    /// The reporting node's last applied index.
    pub applied_index: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// The partitions it hosts.
    pub partitions: Vec<u16>,
    /// Every voter and learner, by node id.
    pub replicas: Vec<ReplicaReport>,
}

/// One replica of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaReport {
    pub node: u64,
    /// A voter (else a learner).
    pub voter: bool,
    /// Whether the node answered the status request.
    pub reachable: bool,
    /// The highest log index the leader knows the replica holds.
    pub matched: Option<u64>,
    /// The leader's last log index − `matched`, as the leader reports it.
    pub lag: Option<u64>,
    /// The replica's own applied index, as it reports it.
    pub applied_index: Option<u64>,
}

/// One partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionReport {
    pub partition: u16,
    /// The group hosting it.
    pub group: u16,
    /// The group's leader (as in [`GroupReport::leader`]).
    pub leader: Option<u64>,
    /// The offset the next committed event gets, i.e. the number of events,
    /// the highest any node reports.
    pub next_offset: u64,
    /// The lowest projector cursor in this partition, if a projector reports
    /// one.
    pub projector_offset: Option<u64>,
    /// `next_offset` − `projector_offset`.
    pub projector_lag: Option<u64>,
}

/// One metrics endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrapeReport {
    pub target: String,
    /// Whether GET `/metrics` answered with Prometheus text.
    pub up: bool,
    /// Why not, when not.
    pub error: Option<String>,
    /// The processes it names in `chorus_process_info`.
    pub processes: Vec<ProcessInfo>,
}

/// A `chorus_process_info` sample.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub role: String,
    pub id: String,
}

/// A projector (an endpoint reporting projector cursors).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectorReport {
    pub target: String,
    /// Its `chorus_process_info` id (role `projector`, else the endpoint's
    /// first), else the target.
    pub id: String,
    /// Per partition it reports, by partition.
    pub partitions: Vec<ProjectorPartition>,
    /// The sum of `lag` over its partitions (those the log reported).
    pub total_lag: u64,
}

/// A projector's position in one partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectorPartition {
    pub partition: u16,
    /// Its cursor: the offset of the next event it will fold.
    pub offset: u64,
    /// The log's next offset of the partition (`None` when no node reported it).
    pub log_next_offset: Option<u64>,
    /// `log_next_offset` − `offset` (0 if the projector is ahead of the
    /// nodes that answered).
    pub lag: Option<u64>,
}

/// An edge (an endpoint reporting `chorus_edge_connections`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeReport {
    pub target: String,
    /// Its `chorus_process_info` id (role `edge`, else the endpoint's first),
    /// else the target.
    pub id: String,
    pub connections: u64,
}

/// What one endpoint's text says, parsed.
#[derive(Debug, Default, PartialEq)]
struct Scraped {
    processes: Vec<ProcessInfo>,
    /// Projector cursor per partition.
    cursors: BTreeMap<u16, u64>,
    /// Edge connections, if the gauge is there.
    connections: Option<u64>,
}

/// A sample's value as a count: finite, non-negative, rounded down,
/// saturating at `u64::MAX`.
fn count(v: &prometheus_parse::Value) -> Option<u64> {
    use prometheus_parse::Value;
    let f = match v {
        Value::Gauge(f) | Value::Counter(f) | Value::Untyped(f) => *f,
        Value::Histogram(_) | Value::Summary(_) => return None,
    };
    // `as` saturates; NaN and negatives are refused before.
    #[allow(clippy::cast_possible_truncation)]
    (f.is_finite() && f >= 0.0).then_some(f as u64)
}

/// Parses one endpoint's Prometheus text.
///
/// # Errors
/// When the text is not Prometheus text at all (no sample parses).
fn parse_scrape(text: &str) -> Result<Scraped, String> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).map_err(|e| format!("parse: {e}"))?;
    if scrape.samples.is_empty() && text.lines().any(|l| !l.trim().is_empty() && !l.starts_with('#')) {
        return Err("not Prometheus text (no sample parses)".into());
    }
    let mut out = Scraped::default();
    for s in &scrape.samples {
        match s.metric.as_str() {
            PROCESS_INFO => {
                let role = s.labels.get("role").unwrap_or_default().to_owned();
                let id = s.labels.get("id").unwrap_or_default().to_owned();
                out.processes.push(ProcessInfo { role, id });
            }
            PROJECTOR_NEXT_OFFSET => {
                let partition = s.labels.get("partition").and_then(|p| p.parse::<u16>().ok());
                if let (Some(p), Some(v)) = (partition, count(&s.value)) {
                    let slot = out.cursors.entry(p).or_insert(v);
                    *slot = (*slot).min(v);
                }
            }
            EDGE_CONNECTIONS => {
                if let Some(v) = count(&s.value) {
                    out.connections = Some(out.connections.unwrap_or(0).saturating_add(v));
                }
            }
            _ => {}
        }
    }
    out.processes.sort();
    out.processes.dedup();
    Ok(out)
}

/// The id to show for an endpoint: that of its process of `role`, else its
/// first process's, else the target.
fn id_of(processes: &[ProcessInfo], role: &str, target: &str) -> String {
    processes
        .iter()
        .find(|p| p.role == role)
        .or_else(|| processes.first())
        .map_or_else(|| target.to_owned(), |p| p.id.clone())
}

/// The highest index a majority of `voters` hold according to `matched`
/// (a voter missing from it holds nothing).
fn quorum_index(voters: &[u64], matched: &BTreeMap<u64, u64>) -> Option<u64> {
    let mut held: Vec<u64> = voters.iter().map(|v| matched.get(v).copied().unwrap_or(0)).collect();
    held.sort_unstable_by(|a, b| b.cmp(a));
    // With n voters, the (n/2 + 1)-th highest is held by a majority.
    held.get(voters.len() / 2).copied()
}

/// The view of `group` to believe (see the module doc): the node id and its
/// group status.
fn believed(statuses: &BTreeMap<u64, &NodeStatus>, group: u16) -> Option<(u64, GroupStatus)> {
    let views = statuses
        .iter()
        .filter_map(|(id, s)| s.groups.iter().find(|g| g.group.0 == group).map(|g| (*id, g)))
        .collect::<Vec<_>>();
    let claims = views.iter().filter(|(id, g)| g.leader.map(|l| l.0) == Some(*id));
    claims
        .max_by_key(|(_, g)| g.term)
        .or_else(|| views.iter().max_by_key(|(_, g)| (g.term, g.leader.is_some())))
        .map(|(id, g)| (*id, (*g).clone()))
}

/// Merges what `chorus status` gathered into one report. Never fails: a node
/// or endpoint that did not answer is shown as such.
pub fn assemble(nodes: &[NodeProbe], scrapes: &[ScrapeProbe]) -> DeploymentStatus {
    // Who answered, by id (the first answer of a node asked twice wins).
    let mut statuses: BTreeMap<u64, &NodeStatus> = BTreeMap::new();
    for p in nodes {
        if let Ok(s) = &p.result {
            statuses.entry(s.node.0).or_insert(s);
        }
    }
    // Every node: those named in memberships, then the addresses asked.
    let mut by_addr: BTreeMap<String, u64> = BTreeMap::new();
    for s in statuses.values() {
        for m in &s.members {
            by_addr.entry(m.client_addr.clone()).or_insert(m.node.0);
        }
    }
    let mut reports: BTreeMap<(Option<u64>, String), NodeReport> = BTreeMap::new();
    let mut ids_seen: BTreeSet<u64> = BTreeSet::new();
    for p in nodes {
        let id = match &p.result {
            Ok(s) => Some(s.node.0),
            Err(_) => by_addr.get(&p.addr).copied(),
        };
        if id.is_some_and(|id| ids_seen.contains(&id)) || reports.contains_key(&(id, p.addr.clone())) {
            continue;
        }
        if let Some(id) = id {
            ids_seen.insert(id);
        }
        let (reachable, error) = match &p.result {
            Ok(_) => (true, None),
            Err(e) => (false, Some(e.clone())),
        };
        reports.insert((id, p.addr.clone()), NodeReport { id, client_addr: p.addr.clone(), reachable, error });
    }
    for (addr, id) in &by_addr {
        if ids_seen.insert(*id) {
            let error = Some("not asked".to_owned());
            reports.insert(
                (Some(*id), addr.clone()),
                NodeReport { id: Some(*id), client_addr: addr.clone(), reachable: false, error },
            );
        }
    }
    // Unknown ids (`None`) sort first in the key; show them last.
    let (known, unknown): (Vec<_>, Vec<_>) = reports.into_values().partition(|r| r.id.is_some());
    let node_reports: Vec<NodeReport> = known.into_iter().chain(unknown).collect();

    // Groups.
    let group_ids: BTreeSet<u16> = statuses.values().flat_map(|s| s.groups.iter().map(|g| g.group.0)).collect();
    let groups: Vec<GroupReport> = group_ids
        .into_iter()
        .filter_map(|g| believed(&statuses, g).map(|view| (g, view)))
        .map(|(g, (reporter, view))| {
            let from_leader = view.leader.map(|l| l.0) == Some(reporter);
            let voters: Vec<u64> = view.voters.iter().map(|v| v.0).collect();
            let learners: Vec<u64> = view.learners.iter().map(|v| v.0).collect();
            let progress: BTreeMap<u64, (Option<u64>, Option<u64>)> =
                view.replicas.iter().map(|r| (r.node.0, (r.matched.map(|m| m.0), r.lag))).collect();
            let matched: BTreeMap<u64, u64> = progress.iter().filter_map(|(n, (m, _))| m.map(|m| (*n, m))).collect();
            let replicas = voters
                .iter()
                .map(|v| (*v, true))
                .chain(learners.iter().map(|l| (*l, false)))
                .map(|(node, voter)| {
                    let own = statuses.get(&node).and_then(|s| s.groups.iter().find(|x| x.group.0 == g));
                    let (matched, lag) =
                        if from_leader { progress.get(&node).copied().unwrap_or((None, None)) } else { (None, None) };
                    ReplicaReport {
                        node,
                        voter,
                        reachable: statuses.contains_key(&node),
                        matched,
                        lag,
                        applied_index: own.map(|o| o.last_applied.0),
                    }
                })
                .collect();
            GroupReport {
                group: g,
                leader: view.leader.map(|l| l.0),
                term: view.term,
                reported_by: Some(reporter),
                from_leader,
                last_log_index: view.last_log_index.0,
                commit_index: if from_leader { quorum_index(&voters, &matched) } else { None },
                applied_index: view.last_applied.0,
                voters,
                learners,
                partitions: view.partitions.iter().map(|p| p.0).collect(),
                replicas,
            }
        })
        .collect();

    // Partitions: the highest next offset any node reports.
    let mut partitions: BTreeMap<u16, PartitionReport> = BTreeMap::new();
    for s in statuses.values() {
        for p in &s.partitions {
            let leader = groups.iter().find(|g| g.group == p.group.0).and_then(|g| g.leader);
            let r = partitions.entry(p.partition.0).or_insert(PartitionReport {
                partition: p.partition.0,
                group: p.group.0,
                leader,
                next_offset: 0,
                projector_offset: None,
                projector_lag: None,
            });
            r.next_offset = r.next_offset.max(p.next_offset.0);
        }
    }

    // Metrics endpoints.
    let mut scrape_reports = Vec::new();
    let mut projectors = Vec::new();
    let mut edges = Vec::new();
    for probe in scrapes {
        let parsed = probe.result.clone().and_then(|text| parse_scrape(&text));
        let scraped = match parsed {
            Ok(s) => s,
            Err(error) => {
                scrape_reports.push(ScrapeReport {
                    target: probe.target.clone(),
                    up: false,
                    error: Some(error),
                    processes: Vec::new(),
                });
                continue;
            }
        };
        if !scraped.cursors.is_empty() {
            let mut total_lag = 0u64;
            let ps = scraped
                .cursors
                .iter()
                .map(|(p, offset)| {
                    let log = partitions.get_mut(p);
                    let log_next_offset = log.as_ref().map(|r| r.next_offset);
                    let lag = log_next_offset.map(|n| n.saturating_sub(*offset));
                    if let Some(r) = log {
                        let lowest = r.projector_offset.map_or(*offset, |o| o.min(*offset));
                        r.projector_offset = Some(lowest);
                        r.projector_lag = Some(r.next_offset.saturating_sub(lowest));
                    }
                    total_lag = total_lag.saturating_add(lag.unwrap_or(0));
                    ProjectorPartition { partition: *p, offset: *offset, log_next_offset, lag }
                })
                .collect();
            projectors.push(ProjectorReport {
                target: probe.target.clone(),
                id: id_of(&scraped.processes, "projector", &probe.target),
                partitions: ps,
                total_lag,
            });
        }
        if let Some(connections) = scraped.connections {
            edges.push(EdgeReport {
                target: probe.target.clone(),
                id: id_of(&scraped.processes, "edge", &probe.target),
                connections,
            });
        }
        scrape_reports.push(ScrapeReport {
            target: probe.target.clone(),
            up: true,
            error: None,
            processes: scraped.processes,
        });
    }

    DeploymentStatus {
        nodes: node_reports,
        groups,
        partitions: partitions.into_values().collect(),
        scrapes: scrape_reports,
        projectors,
        edges,
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn list(v: &[u64]) -> String {
    if v.is_empty() {
        "-".to_owned()
    } else {
        v.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
    }
}

/// Lays rows out as a table: each column as wide as its widest cell, cells
/// separated by two spaces, the header first.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let s = cells.zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ");
        format!("{}\n", s.trim_end())
    };
    let mut out = line(&mut header.iter().copied());
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// The plain-text form: one table per section (nodes, groups, replicas,
/// partitions, metrics endpoints, projectors, edges), each under a title
/// line, one line per item.
pub fn render_text(s: &DeploymentStatus) -> String {
    let mut out = String::new();
    let up = |b: bool| if b { "up" } else { "DOWN" }.to_owned();
    let nodes: Vec<Vec<String>> = s
        .nodes
        .iter()
        .map(|n| vec![opt(n.id), n.client_addr.clone(), up(n.reachable), n.error.clone().unwrap_or_default()])
        .collect();
    out.push_str(&format!("NODES ({})\n", s.nodes.len()));
    out.push_str(&table(&["ID", "CLIENT_ADDR", "STATE", "ERROR"], &nodes));

    let groups: Vec<Vec<String>> = s
        .groups
        .iter()
        .map(|g| {
            vec![
                g.group.to_string(),
                opt(g.leader),
                g.term.to_string(),
                g.last_log_index.to_string(),
                opt(g.commit_index),
                g.applied_index.to_string(),
                list(&g.voters),
                list(&g.learners),
                format!("{}{}", opt(g.reported_by), if g.from_leader { "" } else { " (no leader answered)" }),
            ]
        })
        .collect();
    out.push_str(&format!("\nGROUPS ({})\n", s.groups.len()));
    out.push_str(&table(
        &["GROUP", "LEADER", "TERM", "LAST_LOG", "COMMIT", "APPLIED", "VOTERS", "LEARNERS", "REPORTED_BY"],
        &groups,
    ));

    let replicas: Vec<Vec<String>> = s
        .groups
        .iter()
        .flat_map(|g| {
            g.replicas.iter().map(move |r| {
                vec![
                    g.group.to_string(),
                    r.node.to_string(),
                    if r.voter { "voter" } else { "learner" }.to_owned(),
                    up(r.reachable),
                    opt(r.matched),
                    opt(r.lag),
                    opt(r.applied_index),
                ]
            })
        })
        .collect();
    out.push_str(&format!("\nREPLICAS ({})\n", replicas.len()));
    out.push_str(&table(&["GROUP", "NODE", "KIND", "STATE", "MATCHED", "LAG", "APPLIED"], &replicas));

    let partitions: Vec<Vec<String>> = s
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.partition.to_string(),
                p.group.to_string(),
                opt(p.leader),
                p.next_offset.to_string(),
                opt(p.projector_offset),
                opt(p.projector_lag),
            ]
        })
        .collect();
    out.push_str(&format!("\nPARTITIONS ({})\n", s.partitions.len()));
    out.push_str(&table(
        &["PARTITION", "GROUP", "LEADER", "NEXT_OFFSET", "PROJECTOR_OFFSET", "PROJECTOR_LAG"],
        &partitions,
    ));

    let scrapes: Vec<Vec<String>> = s
        .scrapes
        .iter()
        .map(|m| {
            let procs = m.processes.iter().map(|p| format!("{}:{}", p.role, p.id)).collect::<Vec<_>>().join(",");
            vec![m.target.clone(), up(m.up), procs, m.error.clone().unwrap_or_default()]
        })
        .collect();
    out.push_str(&format!("\nMETRICS ENDPOINTS ({})\n", s.scrapes.len()));
    out.push_str(&table(&["TARGET", "STATE", "PROCESSES", "ERROR"], &scrapes));

    let projectors: Vec<Vec<String>> = s
        .projectors
        .iter()
        .map(|p| {
            let behind = p.partitions.iter().filter(|x| x.lag.is_some_and(|l| l > 0)).count();
            vec![
                p.id.clone(),
                p.target.clone(),
                p.partitions.len().to_string(),
                p.total_lag.to_string(),
                behind.to_string(),
            ]
        })
        .collect();
    out.push_str(&format!("\nPROJECTORS ({})\n", s.projectors.len()));
    out.push_str(&table(&["ID", "TARGET", "PARTITIONS", "TOTAL_LAG", "PARTITIONS_BEHIND"], &projectors));

    let edges: Vec<Vec<String>> =
        s.edges.iter().map(|e| vec![e.id.clone(), e.target.clone(), e.connections.to_string()]).collect();
    out.push_str(&format!("\nEDGES ({})\n", s.edges.len()));
    out.push_str(&table(&["ID", "TARGET", "CONNECTIONS"], &edges));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_schema::{GroupId, LogIndex, MemberAddr, NodeId, Offset, PartitionId, PartitionStatus, ReplicaStatus};

    /// A node's status in a 3-node cluster with one group of 2 partitions
    /// (`leader` leads it at term 3, last log index `last`), as the node
    /// would send it: progress only on the leader.
    fn node_status(id: u64, leader: u64, last: u64, matched: &[(u64, Option<u64>)], offsets: [u64; 2]) -> NodeStatus {
        let replicas = if id == leader {
            matched
                .iter()
                .map(|(n, m)| ReplicaStatus {
                    node: NodeId(*n),
                    matched: m.map(LogIndex),
                    lag: Some(last.saturating_sub(m.unwrap_or(0))),
                })
                .collect()
        } else {
            vec![]
        };
        let voters = vec![NodeId(1), NodeId(2), NodeId(3)];
        NodeStatus {
            node: NodeId(id),
            partitions: (0..2u16)
                .map(|p| PartitionStatus {
                    partition: PartitionId(p),
                    group: GroupId(0),
                    leader: Some(NodeId(leader)),
                    term: 3,
                    last_log_index: LogIndex(last),
                    last_applied: LogIndex(last),
                    next_offset: Offset(offsets[p as usize]),
                    voters: voters.clone(),
                    replicas: vec![],
                })
                .collect(),
            groups: vec![GroupStatus {
                group: GroupId(0),
                leader: Some(NodeId(leader)),
                term: 3,
                last_log_index: LogIndex(last),
                last_applied: LogIndex(last - 1),
                voters,
                learners: vec![],
                replicas,
                partitions: vec![PartitionId(0), PartitionId(1)],
            }],
            members: (1..=3)
                .map(|n| MemberAddr {
                    node: NodeId(n),
                    client_addr: format!("127.0.0.1:710{n}"),
                    raft_addr: format!("127.0.0.1:720{n}"),
                })
                .collect(),
        }
    }

    /// What `metrics-exporter-prometheus` renders for a projector.
    const PROJECTOR_TEXT: &str = "\
# HELP chorus_process_info Who serves these metrics.
# TYPE chorus_process_info gauge
chorus_process_info{role=\"projector\",id=\"projector-1\"} 1

# TYPE chorus_projector_next_offset gauge
chorus_projector_next_offset{partition=\"0\"} 40
chorus_projector_next_offset{partition=\"1\"} 12

# TYPE chorus_view_query_seconds histogram
chorus_view_query_seconds_bucket{view=\"inbox\",le=\"0.005\"} 3
chorus_view_query_seconds_bucket{view=\"inbox\",le=\"+Inf\"} 4
chorus_view_query_seconds_sum{view=\"inbox\"} 0.02
chorus_view_query_seconds_count{view=\"inbox\"} 4
";

    const EDGE_TEXT: &str = "\
# TYPE chorus_process_info gauge
chorus_process_info{role=\"edge\",id=\"edge-a\"} 1
# TYPE chorus_edge_connections gauge
chorus_edge_connections 7
# TYPE chorus_edge_refusals_total counter
chorus_edge_refusals_total{code=\"rate_limited\"} 2
";

    fn probe(addr: &str, s: Result<NodeStatus, &str>) -> NodeProbe {
        NodeProbe { addr: addr.into(), result: s.map_err(str::to_owned) }
    }

    fn scrape(target: &str, text: Result<&str, &str>) -> ScrapeProbe {
        ScrapeProbe { target: target.into(), result: text.map(str::to_owned).map_err(str::to_owned) }
    }

    #[test]
    fn a_healthy_cluster_is_merged_from_every_view() {
        let all = [(1, Some(100)), (2, Some(100)), (3, Some(97))];
        let nodes = [
            probe("127.0.0.1:7101", Ok(node_status(1, 1, 100, &all, [50, 12]))),
            probe("127.0.0.1:7102", Ok(node_status(2, 1, 100, &[], [49, 12]))),
            probe("127.0.0.1:7103", Ok(node_status(3, 1, 97, &[], [45, 11]))),
        ];
        let s = assemble(&nodes, &[scrape("127.0.0.1:9464", Ok(PROJECTOR_TEXT)), scrape("e:1", Ok(EDGE_TEXT))]);
        assert_eq!(
            s.nodes.iter().map(|n| (n.id, n.reachable)).collect::<Vec<_>>(),
            [(Some(1), true), (Some(2), true), (Some(3), true)]
        );
        let [g] = s.groups.as_slice() else { panic!("{:?}", s.groups) };
        assert_eq!((g.leader, g.reported_by, g.from_leader, g.term), (Some(1), Some(1), true, 3));
        // Two of three voters hold 100: committed there.
        assert_eq!(g.commit_index, Some(100));
        let lags: Vec<_> = g.replicas.iter().map(|r| (r.node, r.matched, r.lag, r.applied_index)).collect();
        assert_eq!(
            lags,
            [(1, Some(100), Some(0), Some(99)), (2, Some(100), Some(0), Some(99)), (3, Some(97), Some(3), Some(96))]
        );
        // The highest next offset any node reports, and the projector's lag behind it.
        let ps: Vec<_> =
            s.partitions.iter().map(|p| (p.partition, p.next_offset, p.projector_offset, p.projector_lag)).collect();
        assert_eq!(ps, [(0, 50, Some(40), Some(10)), (1, 12, Some(12), Some(0))]);
        let [p] = s.projectors.as_slice() else { panic!("{:?}", s.projectors) };
        assert_eq!((p.id.as_str(), p.total_lag), ("projector-1", 10));
        assert_eq!(
            p.partitions[0],
            ProjectorPartition { partition: 0, offset: 40, log_next_offset: Some(50), lag: Some(10) }
        );
        let [e] = s.edges.as_slice() else { panic!("{:?}", s.edges) };
        assert_eq!((e.id.as_str(), e.connections), ("edge-a", 7));
        assert!(s.scrapes.iter().all(|m| m.up));
    }

    #[test]
    fn a_dead_node_shows_unreachable_with_its_lag_and_a_dead_endpoint_as_down() {
        // Node 3 is dead: the leader's view says it matched 60 of 130.
        let progress = [(1, Some(130)), (2, Some(130)), (3, Some(60))];
        let nodes = [
            probe("127.0.0.1:7101", Ok(node_status(1, 1, 130, &progress, [80, 20]))),
            probe("127.0.0.1:7102", Ok(node_status(2, 1, 130, &[], [80, 20]))),
            probe("127.0.0.1:7103", Err("timed out after 2s")),
        ];
        let s = assemble(&nodes, &[scrape("127.0.0.1:9464", Err("connection refused")), scrape("e:1", Ok(EDGE_TEXT))]);
        let n3 = s.nodes.iter().find(|n| n.id == Some(3)).unwrap();
        assert!(!n3.reachable);
        assert_eq!(n3.error.as_deref(), Some("timed out after 2s"));
        let r3 = s.groups[0].replicas.iter().find(|r| r.node == 3).unwrap();
        assert_eq!((r3.reachable, r3.matched, r3.lag, r3.applied_index), (false, Some(60), Some(70), None));
        assert_eq!(s.groups[0].commit_index, Some(130));
        let down = s.scrapes.iter().find(|m| m.target == "127.0.0.1:9464").unwrap();
        assert!(!down.up && down.error.as_deref() == Some("connection refused"));
        // The rest is still there.
        assert_eq!(s.edges.len(), 1);
        assert!(s.projectors.is_empty());
        assert_eq!(s.partitions.len(), 2);
        let text = render_text(&s);
        assert!(text.contains("DOWN"), "{text}");
    }

    #[test]
    fn nodes_learnt_from_memberships_are_listed_even_unasked() {
        // Only node 2 was asked (a follower); it names 1 and 3.
        let s = assemble(&[probe("127.0.0.1:7102", Ok(node_status(2, 1, 10, &[], [1, 1])))], &[]);
        let ids: Vec<_> = s.nodes.iter().map(|n| (n.id, n.client_addr.as_str(), n.reachable)).collect();
        assert_eq!(
            ids,
            [(Some(1), "127.0.0.1:7101", false), (Some(2), "127.0.0.1:7102", true), (Some(3), "127.0.0.1:7103", false)]
        );
        // No leader answered: the follower's view, without progress.
        let g = &s.groups[0];
        assert_eq!((g.leader, g.reported_by, g.from_leader, g.commit_index), (Some(1), Some(2), false, None));
        assert!(g.replicas.iter().all(|r| r.matched.is_none() && r.lag.is_none()));
    }

    #[test]
    fn a_seed_address_that_never_answered_is_kept_unknown() {
        let s = assemble(&[probe("10.9.9.9:7100", Err("connect: timed out"))], &[]);
        assert_eq!(
            s.nodes,
            [NodeReport {
                id: None,
                client_addr: "10.9.9.9:7100".into(),
                reachable: false,
                error: Some("connect: timed out".into())
            }]
        );
        assert!(s.groups.is_empty() && s.partitions.is_empty());
    }

    #[test]
    fn the_highest_term_leader_claim_wins_over_a_stale_one() {
        let mut stale = node_status(1, 1, 50, &[(1, Some(50)), (2, Some(10)), (3, Some(10))], [5, 5]);
        stale.groups[0].term = 2;
        let fresh = node_status(2, 2, 60, &[(1, Some(50)), (2, Some(60)), (3, Some(60))], [6, 6]);
        let s = assemble(&[probe("a", Ok(stale)), probe("b", Ok(fresh))], &[]);
        let g = &s.groups[0];
        assert_eq!((g.leader, g.term, g.reported_by, g.commit_index), (Some(2), 3, Some(2), Some(60)));
    }

    #[test]
    fn the_quorum_index_is_the_majority_held_one() {
        let m = |v: &[(u64, u64)]| v.iter().copied().collect::<BTreeMap<_, _>>();
        assert_eq!(quorum_index(&[1, 2, 3], &m(&[(1, 9), (2, 5), (3, 1)])), Some(5));
        assert_eq!(quorum_index(&[1, 2, 3], &m(&[(1, 9)])), Some(0));
        assert_eq!(quorum_index(&[1], &m(&[(1, 4)])), Some(4));
        assert_eq!(quorum_index(&[1, 2, 3, 4], &m(&[(1, 9), (2, 8), (3, 7), (4, 1)])), Some(7));
        assert_eq!(quorum_index(&[], &m(&[])), None);
    }

    #[test]
    fn scraped_text_is_parsed_by_the_contract_and_bad_text_is_down() {
        let p = parse_scrape(PROJECTOR_TEXT).unwrap();
        assert_eq!(p.processes, [ProcessInfo { role: "projector".into(), id: "projector-1".into() }]);
        assert_eq!(p.cursors, BTreeMap::from([(0, 40), (1, 12)]));
        assert_eq!(p.connections, None);
        // chorus dev: one endpoint, both roles, untyped samples, odd values.
        let dev = "chorus_process_info{role=\"dev\",id=\"dev\"} 1\n\
                   chorus_projector_next_offset{partition=\"3\"} 5e0\n\
                   chorus_projector_next_offset{partition=\"x\"} 5\n\
                   chorus_projector_next_offset{partition=\"4\"} NaN\n\
                   chorus_edge_connections{listener=\"a\"} 2\n\
                   chorus_edge_connections{listener=\"b\"} 3\n";
        let d = parse_scrape(dev).unwrap();
        assert_eq!((d.cursors, d.connections), (BTreeMap::from([(3, 5)]), Some(5)));
        let s = assemble(&[], &[scrape("dev:9464", Ok(dev)), scrape("html:80", Ok("<html>hello</html>"))]);
        assert_eq!((s.projectors[0].id.as_str(), s.edges[0].id.as_str()), ("dev", "dev"));
        // The log was not reached: the cursor is shown, the lag is unknown.
        assert_eq!(s.projectors[0].partitions[0].lag, None);
        let html = s.scrapes.iter().find(|m| m.target == "html:80").unwrap();
        assert!(!html.up, "{html:?}");
    }

    #[test]
    fn the_text_has_a_header_and_one_line_per_item() {
        let all = [(1, Some(100)), (2, Some(100)), (3, Some(97))];
        let nodes = [
            probe("127.0.0.1:7101", Ok(node_status(1, 1, 100, &all, [50, 12]))),
            probe("127.0.0.1:7102", Ok(node_status(2, 1, 100, &[], [49, 12]))),
            probe("127.0.0.1:7103", Err("refused")),
        ];
        let text = render_text(&assemble(&nodes, &[scrape("p:1", Ok(PROJECTOR_TEXT)), scrape("e:1", Ok(EDGE_TEXT))]));
        let section = |title: &str| -> Vec<&str> {
            text.lines().skip_while(|l| !l.starts_with(title)).skip(1).take_while(|l| !l.is_empty()).collect()
        };
        let nodes = section("NODES (3)");
        assert!(nodes[0].starts_with("ID") && nodes[0].contains("CLIENT_ADDR"), "{text}");
        assert_eq!(nodes.len(), 4, "{text}");
        assert!(nodes[3].starts_with("3 ") && nodes[3].contains("DOWN") && nodes[3].contains("refused"), "{text}");
        assert_eq!(section("GROUPS (1)").len(), 2, "{text}");
        assert_eq!(section("REPLICAS (3)").len(), 4, "{text}");
        assert_eq!(section("PARTITIONS (2)").len(), 3, "{text}");
        assert_eq!(section("PROJECTORS (1)").len(), 2, "{text}");
        let edges = section("EDGES (1)");
        assert!(edges[1].starts_with("edge-a") && edges[1].ends_with('7'), "{text}");
    }
}
