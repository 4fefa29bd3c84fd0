//! Safety numbers: what two users compare (read aloud or side by side) to
//! know that no one sits between them. Signal's scheme: for each user, 5200
//! rounds of SHA-512 over a version, the user's identity keys and the user
//! id; the first 30 bytes give 6 groups of 5 digits (each 5-byte chunk,
//! big-endian, modulo 100000); the two users' 30 digits are joined, the
//! smaller user id first, so both sides see the same 60 digits. A user's
//! identity keys are those of all their devices, sorted.

use chorus_schema::UserId;
use sha2::{Digest, Sha512};

const VERSION: [u8; 2] = [0, 0];
const ITERATIONS: usize = 5200;

/// The 30 digits of one user.
fn half(user: UserId, identity_keys: &[Vec<u8>]) -> String {
    let mut keys: Vec<&Vec<u8>> = identity_keys.iter().collect();
    keys.sort();
    let mut joined = Vec::new();
    for k in keys {
        joined.extend_from_slice(k);
    }
    let uid = user.0.to_be_bytes();
    let mut hash = {
        let mut h = Sha512::new();
        h.update(VERSION);
        h.update(&joined);
        h.update(uid);
        h.finalize()
    };
    for _ in 1..ITERATIONS {
        let mut h = Sha512::new();
        h.update(hash);
        h.update(&joined);
        hash = h.finalize();
    }
    let mut out = String::with_capacity(30);
    for chunk in hash.chunks(5).take(6) {
        let n = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        out.push_str(&format!("{:05}", n % 100_000));
    }
    out
}

/// The safety number of users `a` and `b` given their devices' identity
/// keys: 60 digits, the same whichever side computes it.
pub fn safety_number(a: (UserId, &[Vec<u8>]), b: (UserId, &[Vec<u8>])) -> String {
    let (first, second) = if a.0 <= b.0 { (a, b) } else { (b, a) };
    let mut s = half(first.0, first.1);
    s.push_str(&half(second.0, second.1));
    s
}

/// The 60 digits in 12 groups of 5, separated by spaces.
pub fn format_safety_number(digits: &str) -> String {
    digits.as_bytes().chunks(5).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_on_both_sides_and_changes_with_a_key() {
        let a = vec![vec![1u8; 64]];
        let b = vec![vec![2u8; 64], vec![3u8; 64]];
        let ab = safety_number((UserId(10), &a), (UserId(20), &b));
        let ba = safety_number((UserId(20), &b), (UserId(10), &a));
        assert_eq!(ab, ba);
        assert_eq!(ab.len(), 60);
        assert!(ab.chars().all(|c| c.is_ascii_digit()));
        let b2 = vec![vec![3u8; 64], vec![2u8; 64]];
        assert_eq!(ab, safety_number((UserId(10), &a), (UserId(20), &b2)), "device order does not matter");
        let evil = vec![vec![9u8; 64]];
        assert_ne!(ab, safety_number((UserId(10), &a), (UserId(20), &evil)));
        let f = format_safety_number(&ab);
        assert_eq!(f.split(' ').count(), 12);
    }
}
