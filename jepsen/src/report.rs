//! `report.html`: one self-contained page (inline SVG, no scripts) with
//! throughput and latency over time, fault windows shaded, the verdict per
//! invariant, the faults with their write stalls, and liveness.

use std::fmt::Write;

use crate::history::{Op, Operation, Outcome};
use crate::nemesis::{FaultKind, Window};
use crate::run::RunReport;

const W: f64 = 960.0;
const H: f64 = 220.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 22.0;
const BOTTOM: f64 = 28.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn color(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::Kill | FaultKind::KillLeader | FaultKind::KillMinority | FaultKind::KillAll => "#e4572e",
        FaultKind::Pause | FaultKind::PauseLeader => "#f3a712",
        FaultKind::LoseUnsynced | FaultKind::PowerFailure => "#8c564b",
        FaultKind::KillProjector | FaultKind::KillNats => "#76b7b2",
        FaultKind::CorruptWal | FaultKind::CorruptSst => "#000000",
        _ => "#4e79a7",
    }
}

/// Maps run time (s) to x.
struct Axis {
    end_s: f64,
}

impl Axis {
    fn x(&self, s: f64) -> f64 {
        LEFT + (W - LEFT - RIGHT) * (s / self.end_s.max(1.0))
    }
}

fn frame(out: &mut String, axis: &Axis, title: &str, windows: &[Window]) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(out, r#"<text x="{LEFT}" y="14" font-weight="bold">{}</text>"#, esc(title));
    for w in windows {
        let (x0, x1) = (axis.x(w.start_ns as f64 / 1e9), axis.x(w.stop_ns as f64 / 1e9));
        let _ = write!(
            out,
            r#"<rect x="{x0:.1}" y="{TOP}" width="{:.1}" height="{:.1}" fill="{}" opacity="0.18"><title>{} {:?}: {}</title></rect>"#,
            (x1 - x0).max(1.0),
            H - TOP - BOTTOM,
            color(w.kind),
            w.kind.name(),
            w.targets,
            esc(&w.detail)
        );
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="9" fill="{}">{}</text>"#,
            x0 + 2.0,
            TOP + 9.0,
            color(w.kind),
            w.kind.name()
        );
    }
    let step = (axis.end_s / 12.0).ceil().max(1.0);
    let mut s = 0.0;
    while s <= axis.end_s {
        let x = axis.x(s);
        let _ = write!(
            out,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}" stroke="#999"/>"##,
            H - BOTTOM,
            H - BOTTOM + 4.0
        );
        let _ = write!(out, r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{s}s</text>"#, H - BOTTOM + 16.0);
        s += step;
    }
    let _ = write!(
        out,
        r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#999"/>"##,
        W - RIGHT,
        H - BOTTOM,
        H - BOTTOM
    );
}

fn polyline(out: &mut String, points: &[(f64, f64)], stroke: &str, label: &str) {
    let pts: Vec<String> = points.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let _ = write!(
        out,
        r#"<polyline fill="none" stroke="{stroke}" stroke-width="1.5" points="{}"><title>{label}</title></polyline>"#,
        pts.join(" ")
    );
}

fn legend(out: &mut String, items: &[(&str, &str)]) {
    let mut x = W - RIGHT - 90.0 * items.len() as f64;
    for (label, c) in items {
        let _ = write!(
            out,
            r#"<rect x="{x:.1}" y="6" width="10" height="10" fill="{c}"/><text x="{:.1}" y="15">{label}</text>"#,
            x + 14.0
        );
        x += 90.0;
    }
}

fn throughput_svg(report: &RunReport, windows: &[Window], axis: &Axis) -> String {
    let mut out = String::new();
    frame(&mut out, axis, "operations completed per second", windows);
    let b = &report.throughput.buckets;
    let max = b.iter().map(|b| b.ok.max(b.fail).max(b.info)).max().unwrap_or(1).max(1) as f64;
    let y = |v: u64| H - BOTTOM - (H - TOP - BOTTOM) * (v as f64 / max);
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{max}</text><text x="{:.1}" y="{:.1}" text-anchor="end">0</text>"#,
        LEFT - 4.0,
        TOP + 8.0,
        LEFT - 4.0,
        H - BOTTOM
    );
    for (label, c, f) in [
        ("ok", "#59a14f", (|b: &crate::analysis::Bucket| b.ok) as fn(&crate::analysis::Bucket) -> u64),
        ("fail", "#9c755f", |b| b.fail),
        ("info", "#b07aa1", |b| b.info),
    ] {
        let pts: Vec<(f64, f64)> = b.iter().map(|bk| (axis.x(bk.second as f64 + 0.5), y(f(bk)))).collect();
        polyline(&mut out, &pts, c, label);
    }
    legend(&mut out, &[("ok", "#59a14f"), ("fail", "#9c755f"), ("info", "#b07aa1")]);
    out.push_str("</svg>");
    out
}

fn latency_svg(report: &RunReport, ops: &[Operation], windows: &[Window], axis: &Axis) -> String {
    let mut out = String::new();
    frame(
        &mut out,
        axis,
        "latency of acknowledged writes (ms, log scale); dots: operations with unknown outcome",
        windows,
    );
    let b = &report.throughput.buckets;
    let max = b.iter().map(|b| b.max_ms).fold(10.0, f64::max);
    let (lo, hi) = (1f64.log10(), max.log10());
    let y = |ms: f64| H - BOTTOM - (H - TOP - BOTTOM) * ((ms.max(1.0).log10() - lo) / (hi - lo).max(1e-9));
    for ms in [1.0, 10.0, 100.0, 1_000.0, 10_000.0] {
        if ms <= max {
            let _ = write!(
                out,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{ms}</text><line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#eee"/>"##,
                LEFT - 4.0,
                y(ms) + 4.0,
                W - RIGHT,
                y(ms),
                y(ms)
            );
        }
    }
    for o in ops {
        let plotted = !matches!(o.op, Op::Read { .. } | Op::DeviceRead { .. } | Op::Reconnect { .. })
            && !crate::sdk::is_unconfirmed_ack(o);
        if let (Outcome::Info(_), Some(done), true) = (&o.outcome, o.complete_ns, plotted) {
            let _ = write!(
                out,
                r##"<circle cx="{:.1}" cy="{:.1}" r="1.6" fill="#b07aa1"/>"##,
                axis.x(done as f64 / 1e9),
                y((done - o.invoke_ns) as f64 / 1e6)
            );
        }
    }
    for (label, c, f) in [
        ("p50", "#4e79a7", (|b: &crate::analysis::Bucket| b.p50_ms) as fn(&crate::analysis::Bucket) -> f64),
        ("p99", "#f28e2b", |b| b.p99_ms),
        ("max", "#e15759", |b| b.max_ms),
    ] {
        let pts: Vec<(f64, f64)> =
            b.iter().filter(|bk| bk.ok > 0).map(|bk| (axis.x(bk.second as f64 + 0.5), y(f(bk)))).collect();
        polyline(&mut out, &pts, c, label);
    }
    legend(&mut out, &[("p50", "#4e79a7"), ("p99", "#f28e2b"), ("max", "#e15759")]);
    out.push_str("</svg>");
    out
}

/// The whole page.
pub fn html(report: &RunReport, ops: &[Operation], windows: &[Window]) -> String {
    let end_s = report.throughput.buckets.len() as f64;
    let axis = Axis { end_s };
    let mut out = String::new();
    let status = if report.valid { ("valid", "#59a14f") } else { ("INVALID", "#e15759") };
    let _ = write!(
        out,
        r#"<!doctype html><html><head><meta charset="utf-8"><title>chorus jepsen seed {}</title>
<style>body{{font-family:sans-serif;margin:24px;max-width:1000px}}table{{border-collapse:collapse;margin:8px 0 18px}}td,th{{border:1px solid #ddd;padding:3px 8px;font-size:13px;text-align:left}}th{{background:#f4f4f4}}.bad{{color:#e15759;font-weight:bold}}</style></head><body>
<h1>chorus jepsen — <span style="color:{}">{}</span></h1>
<p>seed {} · {:.0} s · {} nodes · {} partitions · {:?} executor · nemesis {} · {} ok writes/s · p50 {:.1} ms · p99 {:.1} ms · {} packets dropped</p>"#,
        report.seed,
        status.1,
        status.0,
        report.seed,
        report.time_s,
        report.nodes,
        report.partitions,
        report.executor,
        esc(&report.nemesis.iter().map(|k| k.name()).collect::<Vec<_>>().join(",")),
        report.throughput.ok_per_s.round(),
        report.throughput.p50_ms,
        report.throughput.p99_ms,
        report.packets_dropped,
    );
    out.push_str(&throughput_svg(report, windows, &axis));
    out.push_str("<br>");
    out.push_str(&latency_svg(report, ops, windows, &axis));

    out.push_str("<h2>Invariants</h2><table><tr><th>invariant</th><th>anomalies</th><th>first ones</th></tr>");
    for (inv, list) in &report.verdict.anomalies {
        let first: Vec<String> = list.iter().take(5).map(|a| esc(&a.to_string())).collect();
        let class = if list.is_empty() { "" } else { " class=\"bad\"" };
        let _ = write!(out, "<tr><td>{inv:?}</td><td{class}>{}</td><td>{}</td></tr>", list.len(), first.join("<br>"));
    }
    out.push_str("</table>");
    if !report.not_checked.is_empty() {
        let _ = write!(out, "<p>Not checked in this run: {}</p>", esc(&report.not_checked.join("; ")));
    }

    let l = &report.liveness;
    let _ = write!(
        out,
        "<h2>Liveness</h2><p{}>After the final heal every chat took a new send in {} (bound {} ms){}.</p>",
        if l.holds() { "" } else { " class=\"bad\"" },
        l.recovered_ms.map(|m| format!("{m} ms")).unwrap_or_else(|| "— (never)".into()),
        l.bound_ms,
        if l.stuck_chats.is_empty() { String::new() } else { format!("; stuck chats: {}", l.stuck_chats.len()) }
    );
    if let Some(sdk) = &report.sdk {
        let _ = write!(
            out,
            "<p>Every direct chat's probe reached every device of the recipient in {}{}.</p>\
             <h2>Devices</h2><p>{} live deliveries and receipt ticks observed, {} final reads by the devices themselves. \
             SDK clients: {} logins, {} disconnects, {} sends resent after a reconnect, {} duplicate deliveries dropped; \
             {} connection drops and {} client restarts asked by the workload.</p>",
            l.delivered_ms.map(|m| format!("{m} ms")).unwrap_or_else(|| "— (never)".into()),
            if l.undelivered.is_empty() { String::new() } else { format!("; not delivered: {}", esc(&l.undelivered.join(", "))) },
            report.observed,
            report.device_reads,
            sdk.connects,
            sdk.disconnects,
            sdk.resent,
            sdk.duplicates_dropped,
            sdk.drops,
            sdk.restarts,
        );
    }

    if let Some(l) = &report.lagging {
        let _ = write!(out, "<h2 class=\"bad\">Replicas did not converge</h2><p>{}</p>", esc(l));
    }
    if !report.down.is_empty() {
        out.push_str("<h2 class=\"bad\">Nodes that did not start after the final heal</h2>");
        for d in &report.down {
            let _ = write!(out, "<p>node {}:</p><pre>{}</pre>", d.node, esc(&d.log_tail));
        }
    }
    if let Some(v) = &report.views {
        let _ = write!(
            out,
            "<h2>Views</h2><p>{} live entries, {} rebuilt from the log; the projector caught up in {}.</p>",
            v.live_entries,
            v.rebuilt_entries,
            v.caught_up_ms.map(|m| format!("{m} ms")).unwrap_or_else(|| "— (never)".into())
        );
    }
    out.push_str("<h2>Faults</h2><table><tr><th>#</th><th>kind</th><th>targets</th><th>detail</th><th>start</th><th>duration</th><th>write stall</th><th>recovery after heal</th></tr>");
    for f in &report.faults {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{:?}</td><td>{}</td><td>{:.1} s</td><td>{} ms</td><td>{} ms{}</td><td>{}</td></tr>",
            f.id,
            f.kind.name(),
            f.targets,
            esc(&f.detail),
            f.start_ms as f64 / 1e3,
            f.duration_ms,
            f.stall_ms,
            f.stall_partition.map(|p| format!(" (partition {p})")).unwrap_or_default(),
            f.recovery_ms.map(|m| format!("{m} ms")).unwrap_or_else(|| "never".into()),
        );
    }
    out.push_str("</table><h2>Operations</h2><table><tr><th>operation</th><th>count</th></tr>");
    for (k, n) in &report.ops {
        let _ = write!(out, "<tr><td>{k}</td><td>{n}</td></tr>");
    }
    out.push_str("</table></body></html>\n");
    out
}
