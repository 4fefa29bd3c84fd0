//! Registration PINs: the slow hash that the log stores and compares.
//!
//! The PIN never leaves the edge: the edge hashes it with Argon2id (salted
//! with the user id, so that one table does not serve every user) and the log
//! stores and compares only the hash (`SetRegistrationPin`, `RegisterDevice`).
//! Every edge computes the same hash, so the check holds across edges. A PIN
//! has few bits: what protects it is the cost of each guess here, the
//! per-phone attempt limits and the log's phone lock (a wrong PIN counts as a
//! wrong code).

use argon2::{Algorithm, Argon2, Params, Version};
use chorus_schema::UserId;

/// Argon2id cost: 19 MiB, 2 passes, one lane (the OWASP minimum). Changing it
/// changes every hash: PINs set before would no longer match.
const MEMORY_KIB: u32 = 19 * 1024;
const PASSES: u32 = 2;

/// The hash of `pin` for `user` as the log keeps it.
///
/// # Panics
/// Never for these fixed parameters (Argon2 refuses only bad parameters).
#[expect(clippy::expect_used, reason = "documented panic: Argon2 refuses only bad parameters, and these are fixed")]
pub fn pin_hash(user: UserId, pin: &str) -> [u8; 32] {
    let params = Params::new(MEMORY_KIB, PASSES, 1, Some(32)).expect("valid argon2 parameters");
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut salt = [0u8; 24];
    salt[..16].copy_from_slice(b"chorus/pin/v1\0\0\0");
    salt[16..].copy_from_slice(&user.0.to_be_bytes());
    let mut out = [0u8; 32];
    argon.hash_password_into(pin.as_bytes(), &salt, &mut out).expect("valid argon2 input");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_depends_on_the_pin_and_the_user_and_nothing_else() {
        let a = pin_hash(UserId(1), "123456");
        assert_eq!(a, pin_hash(UserId(1), "123456"));
        assert_ne!(a, pin_hash(UserId(2), "123456"));
        assert_ne!(a, pin_hash(UserId(1), "123457"));
        assert_ne!(&a[..6], b"123456");
    }
}
