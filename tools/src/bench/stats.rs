//! Small statistics helpers for benchmark output.

/// Median, minimum and maximum of `xs` (which must not be empty).
#[expect(clippy::indexing_slicing, reason = "indices below the length, asserted positive")]
pub fn median_min_max(xs: &[f64]) -> (f64, f64, f64) {
    assert!(!xs.is_empty(), "no samples");
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 };
    (mid, v[0], v[v.len() - 1])
}

/// User + system CPU time of process `pid` so far, in microseconds (Linux).
pub fn process_cpu_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields after it are space separated.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = 100; // USER_HZ on Linux
    Some((utime + stime) * 1_000_000 / ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_samples() {
        assert_eq!(median_min_max(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(median_min_max(&[4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
    }

    #[test]
    fn cpu_time_of_this_process_is_readable() {
        let us = process_cpu_us(std::process::id()).expect("own /proc stat");
        // Burn some CPU and see the counter move forward.
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        let later = process_cpu_us(std::process::id()).expect("own /proc stat");
        assert!(later > us, "{later} <= {us}");
    }
}
