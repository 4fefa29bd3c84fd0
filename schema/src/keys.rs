//! The E2EE key directory on the wire (issue 14): a device's published keys
//! ([`DeviceKeys`]), the digest of a device list ([`device_list_digest`]) and
//! the flatbuffer helpers of the `UploadKeys`, `ClaimKeys`, `GetDeviceKeys`,
//! `KeysUploaded`, `KeyBundle`, `DeviceKeyList`, `StaleDevices` and `KeysLow`
//! frames (the frames themselves are variants of [`crate::edge::ClientFrame`]
//! and [`crate::edge::ServerFrame`]).

use serde::{Deserialize, Serialize};

use crate::codec::{self, Builder};
use crate::error::check_len;
use crate::fb::edge as fe;
use crate::ids::{DeviceId, UserId};
use crate::limits::{MAX_DEVICES_PER_USER, MAX_GROUP_MEMBERS, MAX_KEY_BYTES, MAX_PREKEYS_PER_UPLOAD};
use crate::types::Prekey;
use crate::Result;

/// Most entries of a `StaleDevices` list: every device of every member of
/// the largest group.
pub const MAX_DEVICE_LIST: usize = MAX_GROUP_MEMBERS * MAX_DEVICES_PER_USER;

/// One device's keys as the directory hands them out: its identity key
/// (opaque to chorus: vodozemac's Curve25519 key then its Ed25519 key), the
/// one-time key claimed for the asker (`KeyBundle` only; `None` when the
/// device had none left) and its fallback key with the device's signature
/// over the key's bytes (`None`/empty: never uploaded).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceKeys {
    pub device: DeviceId,
    pub identity_key: Vec<u8>,
    pub one_time_key: Option<Prekey>,
    pub fallback_key: Option<Prekey>,
    pub fallback_signature: Vec<u8>,
}

impl DeviceKeys {
    /// Checks the field limits.
    ///
    /// # Errors
    /// [`crate::Error::TooLarge`] naming the first field over its limit.
    pub fn validate(&self) -> Result<()> {
        check_len("identity key", self.identity_key.len(), MAX_KEY_BYTES)?;
        check_len("fallback signature", self.fallback_signature.len(), MAX_KEY_BYTES)?;
        self.one_time_key.as_ref().map_or(Ok(()), Prekey::validate)?;
        self.fallback_key.as_ref().map_or(Ok(()), Prekey::validate)
    }
}

/// The digest of a device list: BLAKE3 over the list sorted ascending and
/// deduplicated, each entry as the user (u64 big-endian) then the device
/// (u32 big-endian). A `Send`'s `devices_digest`; the edge compares it with
/// the digest of the current list.
pub fn device_list_digest(devices: &[(UserId, DeviceId)]) -> [u8; 32] {
    let mut list = devices.to_vec();
    list.sort_unstable();
    list.dedup();
    let mut h = blake3::Hasher::new();
    for (u, d) in list {
        h.update(&u.0.to_be_bytes());
        h.update(&d.0.to_be_bytes());
    }
    *h.finalize().as_bytes()
}

pub(crate) fn validate_upload(one_time_keys: &[Prekey], fallback_key: &Option<Prekey>, sig: &[u8]) -> Result<()> {
    check_len("one-time keys", one_time_keys.len(), MAX_PREKEYS_PER_UPLOAD)?;
    one_time_keys.iter().try_for_each(Prekey::validate)?;
    fallback_key.as_ref().map_or(Ok(()), Prekey::validate)?;
    check_len("fallback signature", sig.len(), MAX_KEY_BYTES)
}

pub(crate) fn validate_list(devices: &[DeviceKeys]) -> Result<()> {
    check_len("device keys", devices.len(), MAX_DEVICES_PER_USER)?;
    devices.iter().try_for_each(DeviceKeys::validate)
}

pub(crate) fn device_keys_fb<'a>(
    fbb: &mut Builder<'a>,
    devices: &[DeviceKeys],
) -> flatbuffers::WIPOffset<flatbuffers::Vector<'a, flatbuffers::ForwardsUOffset<fe::DeviceKeys<'a>>>> {
    let items: Vec<_> = devices
        .iter()
        .map(|d| {
            let identity_key = fbb.create_vector(&d.identity_key);
            let one_time_key = d.one_time_key.as_ref().map(|p| codec::prekey_fb(fbb, p));
            let fallback_key = d.fallback_key.as_ref().map(|p| codec::prekey_fb(fbb, p));
            let fallback_signature =
                (!d.fallback_signature.is_empty()).then(|| fbb.create_vector(&d.fallback_signature));
            fe::DeviceKeys::create(
                fbb,
                &fe::DeviceKeysArgs {
                    device: d.device.0,
                    identity_key: Some(identity_key),
                    one_time_key,
                    fallback_key,
                    fallback_signature,
                },
            )
        })
        .collect();
    fbb.create_vector(&items)
}

pub(crate) fn device_keys(
    v: flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<fe::DeviceKeys<'_>>>,
) -> Result<Vec<DeviceKeys>> {
    check_len("device keys", v.len(), MAX_DEVICES_PER_USER)?;
    Ok(v.iter()
        .map(|d| DeviceKeys {
            device: DeviceId(d.device()),
            identity_key: d.identity_key().bytes().to_vec(),
            one_time_key: d.one_time_key().map(codec::prekey),
            fallback_key: d.fallback_key().map(codec::prekey),
            fallback_signature: d.fallback_signature().map(|s| s.bytes().to_vec()).unwrap_or_default(),
        })
        .collect())
}

pub(crate) fn addresses_fb(devices: &[(UserId, DeviceId)]) -> Vec<fe::DeviceAddress> {
    devices.iter().map(|(u, d)| fe::DeviceAddress::new(u.0, d.0)).collect()
}

pub(crate) fn addresses(v: flatbuffers::Vector<'_, fe::DeviceAddress>) -> Result<Vec<(UserId, DeviceId)>> {
    check_len("device list", v.len(), MAX_DEVICE_LIST)?;
    Ok(v.iter().map(|a| (UserId(a.user()), DeviceId(a.device()))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_blake3_over_the_sorted_deduplicated_big_endian_list() {
        let a = (UserId(2), DeviceId(1));
        let b = (UserId(1), DeviceId(7));
        let mut expected = Vec::new();
        expected.extend_from_slice(&1u64.to_be_bytes());
        expected.extend_from_slice(&7u32.to_be_bytes());
        expected.extend_from_slice(&2u64.to_be_bytes());
        expected.extend_from_slice(&1u32.to_be_bytes());
        let expected = *blake3::hash(&expected).as_bytes();
        assert_eq!(device_list_digest(&[a, b]), expected);
        assert_eq!(device_list_digest(&[b, a, b]), expected, "order and duplicates do not matter");
        assert_ne!(device_list_digest(&[a]), expected, "a missing device changes it");
        assert_ne!(device_list_digest(&[a, b, (UserId(2), DeviceId(2))]), expected, "an extra device changes it");
        assert_eq!(device_list_digest(&[]), *blake3::hash(b"").as_bytes());
    }
}
