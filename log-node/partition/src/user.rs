//! User state (devices, prekeys, presence, blocks) and the user-partition rules.

use std::collections::{BTreeMap, BTreeSet};

use chorus_schema::{
    CommandBody, DeviceId, EventBody, Origin, Outcome, Prekey, RejectCode, Rejection, StatusAudience, UserId,
};
use serde::{Deserialize, Serialize};

use crate::kv::{self, Key, Kv};
use crate::state::Decision;

/// How long a status post stays visible.
pub const STATUS_TTL_MS: u64 = 24 * 60 * 60 * 1000;
/// Devices one user may link at once: the primary and 4 companions.
pub use chorus_schema::MAX_DEVICES_PER_USER;

/// Phone hashes one user may look up per UTC day of the partition's clock
/// (contact sync), against enumeration of the user directory.
pub const CONTACT_LOOKUPS_PER_DAY: u32 = 2000;
/// One day: the contact-lookup window, and how long an expired status post's
/// record stays so that viewing it is answered `Expired` (then `UnknownStatus`).
pub const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// What the rules keep of a status post: enough to decide `ViewStatus`.
/// The content stays in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRecord {
    pub expires_at_ms: u64,
    pub audience: StatusAudience,
    /// Sorted.
    pub acl: Vec<UserId>,
    /// Who viewed it, sorted.
    pub viewers: Vec<UserId>,
}

/// Phone hashes looked up by one user on one UTC day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupCount {
    pub day: u64,
    pub hashes: u32,
}

fn status_key(user: UserId, status_id: u64) -> Key {
    Key::new(kv::STATUS).user(user).u64(status_id)
}

pub(crate) fn status(kv: &impl Kv, user: UserId, status_id: u64) -> Option<StatusRecord> {
    kv::read(kv, &status_key(user, status_id))
}

fn contacts_key(user: UserId) -> Key {
    Key::new(kv::CONTACTS).user(user)
}

pub(crate) fn contacts(kv: &impl Kv, user: UserId) -> Vec<UserId> {
    kv::read(kv, &contacts_key(user)).unwrap_or_default()
}

fn lookups_key(user: UserId) -> Key {
    Key::new(kv::LOOKUPS).user(user)
}

/// Hashes `user` looked up on the UTC day of `at_ms`.
pub(crate) fn lookups_on(kv: &impl Kv, user: UserId, at_ms: u64) -> u32 {
    let c: LookupCount = kv::read(kv, &lookups_key(user)).unwrap_or_default();
    if c.day == at_ms / DAY_MS {
        c.hashes
    } else {
        0
    }
}

/// Decides `ViewStatus` of `author`'s post by `viewer` at `now_ms`.
fn view_status(
    kv: &impl Kv,
    now_ms: u64,
    viewer: UserId,
    author: UserId,
    status_id: u64,
) -> Result<Decision, Rejection> {
    let unknown = || reject(RejectCode::UnknownStatus, format!("no status {status_id} of user {author} for you"));
    let Some(s) = status(kv, author, status_id) else { return Err(unknown()) };
    if viewer == author {
        return Ok(nothing(Outcome::Done));
    }
    // A blocked viewer learns nothing, not even that the post expired.
    if is_blocked(kv, author, viewer) {
        return Err(unknown());
    }
    let is_contact = contacts(kv, author).binary_search(&viewer).is_ok();
    if !s.audience.admits(viewer, &s.acl, is_contact) {
        return Err(unknown());
    }
    if now_ms >= s.expires_at_ms {
        return Err(reject(RejectCode::Expired, format!("status {status_id} of user {author} expired")));
    }
    if s.viewers.binary_search(&viewer).is_ok() {
        return Ok(nothing(Outcome::Done));
    }
    Ok(done(EventBody::StatusViewed { user: author, status_id, viewer }))
}

/// Unclaimed one-time prekeys one device may hold.
pub const MAX_PREKEYS_PER_DEVICE: usize = 1024;
/// Users one user may block.
pub const MAX_BLOCKED_PER_USER: usize = 10_000;
/// Wrong codes or PINs of one phone, at any edge, within
/// [`OTP_FAILURE_WINDOW_MS`] that lock it...
pub const OTP_FAILURES_MAX: usize = 10;
/// ...the window they are counted over (sliding)...
pub const OTP_FAILURE_WINDOW_MS: u64 = 6 * 60 * 60 * 1000;
/// ...and how long the phone is then locked: no registration, no more tries.
pub const OTP_LOCK_MS: u64 = 6 * 60 * 60 * 1000;

/// The wrong codes and PINs of one phone (keyed by its user id, registered or
/// not) and its lock.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtpGuard {
    /// Times of the failures inside the window, oldest first (at most
    /// [`OTP_FAILURES_MAX`]).
    pub failures: Vec<u64>,
    /// Locked while the partition's time is below this.
    pub locked_until_ms: u64,
}

fn guard_key(user: UserId) -> Key {
    Key::new(kv::OTP_GUARD).user(user)
}

pub(crate) fn otp_guard(kv: &impl Kv, user: UserId) -> OtpGuard {
    kv::read(kv, &guard_key(user)).unwrap_or_default()
}

fn pin_key(user: UserId) -> Key {
    Key::new(kv::PIN).user(user)
}

pub(crate) fn pin_hash(kv: &impl Kv, user: UserId) -> Option<[u8; 32]> {
    kv::read(kv, &pin_key(user))
}

/// `Locked` if the phone of `user` is locked at `at_ms`.
fn check_unlocked(kv: &impl Kv, user: UserId, at_ms: u64) -> Result<(), Rejection> {
    let g = otp_guard(kv, user);
    if g.locked_until_ms > at_ms {
        let minutes = (g.locked_until_ms - at_ms).div_ceil(60_000);
        return Err(reject(
            RejectCode::Locked,
            format!("too many wrong codes or PINs: locked for {minutes} more minutes"),
        ));
    }
    Ok(())
}

/// One linked device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceHead {
    /// The BLAKE3 hash of the device's login token, while it has a session.
    /// Unlinking the device drops it with the device.
    pub session: Option<[u8; 32]>,
    /// Unclaimed one-time prekeys (each a `p ‖ user ‖ device ‖ id` record).
    pub prekeys: u32,
}

/// One registered user's head record: what the rules need, nothing more.
/// Profiles, privacy settings, contacts and status posts are in the log for
/// the views; prekeys and blocks are records of their own.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserHead {
    pub phone: String,
    pub devices: BTreeMap<DeviceId, DeviceHead>,
    /// The highest prekey id ever uploaded per device. Kept when a device is
    /// unlinked, so that a (user, device, prekey id) is handed out at most once ever.
    pub prekey_high: BTreeMap<DeviceId, u32>,
    pub online: bool,
    /// How many users this one blocks.
    pub blocked: u32,
}

pub(crate) fn head(kv: &impl Kv, user: UserId) -> Option<UserHead> {
    kv::read(kv, &Key::new(kv::USER).user(user))
}

fn put_head(kv: &mut impl Kv, user: UserId, h: &UserHead) {
    kv::write(kv, &Key::new(kv::USER).user(user), h);
}

fn prekey_key(user: UserId, device: DeviceId, id: u32) -> Key {
    Key::new(kv::PREKEY).user(user).device(device).u32(id)
}

fn online_key(user: UserId, device: DeviceId) -> Key {
    Key::new(kv::ONLINE).user(user).device(device)
}

/// The online connection of each online device of `user`, in device order.
pub(crate) fn online_devices(kv: &impl Kv, user: UserId) -> Vec<(DeviceId, u64)> {
    let prefix = Key::new(kv::ONLINE).user(user);
    kv.scan(prefix.bytes(), usize::MAX)
        .into_iter()
        .map(|(k, v)| (DeviceId(kv::u32_at(&k, 9)), kv::decode(&k, &v)))
        .collect()
}

fn block_key(user: UserId, target: UserId) -> Key {
    Key::new(kv::BLOCK).user(user).user(target)
}

/// The unclaimed prekey of `device` with the lowest id.
fn first_prekey(kv: &impl Kv, user: UserId, device: DeviceId) -> Option<(u32, Vec<u8>)> {
    let prefix = Key::new(kv::PREKEY).user(user).device(device);
    kv.scan(prefix.bytes(), 1).into_iter().next().map(|(k, v)| (kv::u32_at(&k, 13), v))
}

pub(crate) fn is_blocked(kv: &impl Kv, user: UserId, target: UserId) -> bool {
    kv.get(block_key(user, target).bytes()).is_some()
}

/// The users `user` blocks, in id order.
pub(crate) fn blocked(kv: &impl Kv, user: UserId) -> Vec<UserId> {
    let prefix = Key::new(kv::BLOCK).user(user);
    kv.scan(prefix.bytes(), usize::MAX).into_iter().map(|(k, _)| UserId(kv::u64_at(&k, 9))).collect()
}

/// `TooManyDevices` if the user has no room for another device.
fn check_device_room(u: &UserHead) -> Result<(), Rejection> {
    if u.devices.len() >= MAX_DEVICES_PER_USER {
        return Err(reject(
            RejectCode::TooManyDevices,
            format!(
                "a user links at most {MAX_DEVICES_PER_USER} devices (the primary and {} companions): unlink one first",
                MAX_DEVICES_PER_USER - 1
            ),
        ));
    }
    Ok(())
}

fn reject(code: RejectCode, message: impl Into<String>) -> Rejection {
    Rejection::new(code, message)
}

fn done(event: EventBody) -> Decision {
    Decision { events: vec![event], outcome: Outcome::Done }
}

fn nothing(outcome: Outcome) -> Decision {
    Decision { events: vec![], outcome }
}

/// Decides a user-partition command against the current state.
pub(crate) fn decide(kv: &impl Kv, at_ms: u64, origin: &Origin, body: &CommandBody) -> Result<Decision, Rejection> {
    let me = origin.user;
    // ---- push and reports (issue 14) ----
    if let Some(decision) = crate::push::decide(kv, origin, body) {
        return decision;
    }
    if let CommandBody::RecordOtpFailure = body {
        check_unlocked(kv, me, at_ms)?;
        return Ok(done(EventBody::OtpFailed { user: me }));
    }
    if let CommandBody::RegisterDevice { phone, device, identity_key, name, token_hash, pin_hash: pin } = body {
        check_unlocked(kv, me, at_ms)?;
        let mut events = Vec::with_capacity(3);
        match head(kv, me) {
            None => events.push(EventBody::UserRegistered { user: me, phone: phone.clone() }),
            Some(u) => {
                // blake3::Hash compares in constant time.
                if let Some(stored) = self::pin_hash(kv, me) {
                    if pin.is_none_or(|p| blake3::Hash::from(p) != blake3::Hash::from(stored)) {
                        let what = if pin.is_some() {
                            "wrong registration PIN"
                        } else {
                            "this phone's user set a registration PIN"
                        };
                        return Err(reject(RejectCode::PinRequired, what));
                    }
                }
                if u.devices.contains_key(device) {
                    return Err(reject(RejectCode::AlreadyExists, format!("device {device} is linked")));
                }
                check_device_room(&u)?;
            }
        }
        events.push(EventBody::DeviceLinked {
            user: me,
            device: *device,
            identity_key: identity_key.clone(),
            name: name.clone(),
        });
        events.push(EventBody::SessionCreated { user: me, device: *device, token_hash: *token_hash });
        return Ok(Decision { events, outcome: Outcome::Done });
    }
    if let CommandBody::ViewStatus { author, status_id } = body {
        return view_status(kv, at_ms, me, *author, *status_id);
    }
    if let CommandBody::RegisterUser { phone } = body {
        if head(kv, me).is_some() {
            return Err(reject(RejectCode::AlreadyExists, format!("user {me} is registered")));
        }
        return Ok(done(EventBody::UserRegistered { user: me, phone: phone.clone() }));
    }
    // ---- E2EE (issue 14) ----
    if let CommandBody::ClaimDeviceKeys { target } = body {
        let (event, outcome) = crate::keys::decide_claim(kv, me, *target)?;
        return Ok(Decision { events: vec![event], outcome });
    }
    if let CommandBody::ClaimPrekey { target, target_device } = body {
        let u = head(kv, *target).ok_or_else(|| reject(RejectCode::UnknownUser, format!("no user {target}")))?;
        if !u.devices.contains_key(target_device) {
            return Err(reject(RejectCode::Invalid, format!("user {target} has no device {target_device}")));
        }
        let Some((id, key)) = first_prekey(kv, *target, *target_device) else {
            return Err(reject(
                RejectCode::NoPrekeys,
                format!("device {target_device} of user {target} has no prekeys"),
            ));
        };
        return Ok(Decision {
            events: vec![EventBody::PrekeyClaimed {
                user: *target,
                device: *target_device,
                prekey_id: id,
                claimed_by: me,
            }],
            outcome: Outcome::PrekeyClaimed { user: *target, device: *target_device, prekey: Prekey { id, key } },
        });
    }
    let u = head(kv, me).ok_or_else(|| reject(RejectCode::UnknownUser, format!("user {me} is not registered")))?;
    match body {
        CommandBody::LinkDevice { device, identity_key, name, token_hash } => {
            // A pairing is made by a linked, logged-in device of the user.
            // (Links without a session are older log entries: applied as they were.)
            if token_hash.is_some() && u.devices.get(&origin.device).is_none_or(|d| d.session.is_none()) {
                return Err(reject(
                    RejectCode::Invalid,
                    format!("device {} of user {me} is not logged in: it cannot link devices", origin.device),
                ));
            }
            if u.devices.contains_key(device) {
                return Err(reject(RejectCode::AlreadyExists, format!("device {device} is linked")));
            }
            check_device_room(&u)?;
            let mut events = vec![EventBody::DeviceLinked {
                user: me,
                device: *device,
                identity_key: identity_key.clone(),
                name: name.clone(),
            }];
            // Linked with a pairing code: its session opens with the link, so
            // a refused link leaves no session and a session no unlinked device.
            if let Some(token_hash) = token_hash {
                events.push(EventBody::SessionCreated { user: me, device: *device, token_hash: *token_hash });
            }
            Ok(Decision { events, outcome: Outcome::Done })
        }
        CommandBody::UnlinkDevice { device } => {
            if !u.devices.contains_key(device) {
                return Err(reject(RejectCode::Invalid, format!("device {device} is not linked")));
            }
            Ok(done(EventBody::DeviceUnlinked { user: me, device: *device }))
        }
        CommandBody::UpdateProfile { name, about, avatar } => Ok(done(EventBody::ProfileUpdated {
            user: me,
            name: name.clone(),
            about: about.clone(),
            avatar: avatar.clone(),
        })),
        CommandBody::SetPrivacy { last_seen, profile_photo, about, read_receipts } => {
            Ok(done(EventBody::PrivacyChanged {
                user: me,
                last_seen: *last_seen,
                profile_photo: *profile_photo,
                about: *about,
                read_receipts: *read_receipts,
            }))
        }
        CommandBody::SetPresence { online, connection } => {
            let device = origin.device;
            let current: Option<u64> = kv::read(kv, &online_key(me, device));
            let others = online_devices(kv, me).into_iter().any(|(d, _)| d != device);
            let event = |device_online: bool| {
                done(EventBody::PresenceChanged {
                    user: me,
                    online: device_online || others,
                    device,
                    connection: *connection,
                    device_online,
                })
            };
            match (*online, current) {
                (true, Some(c)) if c == *connection => Ok(nothing(Outcome::Done)),
                (true, _) if !u.devices.contains_key(&device) => {
                    Err(reject(RejectCode::Invalid, format!("device {device} is not linked")))
                }
                (true, _) => Ok(event(true)),
                (false, Some(c)) if c == *connection => Ok(event(false)),
                // Another (older or newer) connection of the device, or none.
                (false, _) => Ok(nothing(Outcome::Done)),
            }
        }
        CommandBody::UploadPrekeys { device, prekeys } => {
            let d = u
                .devices
                .get(device)
                .ok_or_else(|| reject(RejectCode::Invalid, format!("device {device} is not linked")))?;
            if prekeys.is_empty() {
                return Err(reject(RejectCode::Invalid, "no prekeys to upload"));
            }
            crate::keys::check_prekeys(*device, prekeys, u.prekey_high.get(device).copied(), d.prekeys)?;
            Ok(done(EventBody::PrekeysUploaded { user: me, device: *device, prekeys: prekeys.clone() }))
        }
        CommandBody::PostStatus { status_id, ciphertext, media, acl, audience, ttl_ms } => {
            if status(kv, me, *status_id).is_some() {
                return Err(reject(RejectCode::AlreadyExists, format!("status {status_id} exists")));
            }
            let ttl = if *ttl_ms == 0 { STATUS_TTL_MS } else { (*ttl_ms).min(STATUS_TTL_MS) };
            Ok(done(EventBody::StatusPosted {
                user: me,
                status_id: *status_id,
                ciphertext: ciphertext.clone(),
                media: media.clone(),
                acl: normalized(acl, me),
                expires_at_ms: at_ms.saturating_add(ttl),
                audience: *audience,
            }))
        }
        CommandBody::RecordContactLookup { hashes } => {
            if *hashes == 0 {
                return Err(reject(RejectCode::Invalid, "no phone hashes to look up"));
            }
            let used = lookups_on(kv, me, at_ms);
            if used.saturating_add(*hashes) > CONTACT_LOOKUPS_PER_DAY {
                return Err(reject(
                    RejectCode::RateLimited,
                    format!(
                        "contact sync: {used} of {CONTACT_LOOKUPS_PER_DAY} phone hashes used today, {hashes} more asked; \
                         the allowance renews at 00:00 UTC"
                    ),
                ));
            }
            Ok(done(EventBody::ContactLookupRecorded { user: me, hashes: *hashes }))
        }
        // ---- media (issue 14) ----
        CommandBody::RecordMedia { blake3, size } => {
            if *size == 0 {
                return Err(reject(RejectCode::Invalid, "an empty media object"));
            }
            Ok(done(EventBody::MediaUploaded { user: me, blake3: *blake3, size: *size }))
        }
        CommandBody::UpdateContacts { contacts } => {
            Ok(done(EventBody::ContactsUpdated { user: me, contacts: normalized(contacts, me) }))
        }
        CommandBody::Block { target } => {
            if *target == me {
                return Err(reject(RejectCode::Invalid, "cannot block yourself"));
            }
            if is_blocked(kv, me, *target) {
                return Ok(nothing(Outcome::Done));
            }
            if u.blocked as usize >= MAX_BLOCKED_PER_USER {
                return Err(reject(RejectCode::Invalid, format!("a user blocks at most {MAX_BLOCKED_PER_USER} users")));
            }
            Ok(done(EventBody::UserBlocked { user: me, target: *target }))
        }
        CommandBody::Unblock { target } => {
            if !is_blocked(kv, me, *target) {
                return Ok(nothing(Outcome::Done));
            }
            Ok(done(EventBody::UserUnblocked { user: me, target: *target }))
        }
        CommandBody::CreateSession { device, token_hash } => {
            if !u.devices.contains_key(device) {
                return Err(reject(RejectCode::Invalid, format!("device {device} is not linked")));
            }
            Ok(done(EventBody::SessionCreated { user: me, device: *device, token_hash: *token_hash }))
        }
        CommandBody::RevokeSession { device } => {
            if u.devices.get(device).is_none_or(|d| d.session.is_none()) {
                return Ok(nothing(Outcome::Done));
            }
            Ok(done(EventBody::SessionRevoked { user: me, device: *device }))
        }
        CommandBody::SetRegistrationPin { pin_hash: pin } => {
            if self::pin_hash(kv, me) == *pin {
                return Ok(nothing(Outcome::Done));
            }
            Ok(done(EventBody::RegistrationPinSet { user: me, pin_hash: *pin }))
        }
        // ---- E2EE (issue 14) ----
        CommandBody::UploadDeviceKeys { prekeys, fallback_key, fallback_signature } => {
            let (event, outcome) =
                crate::keys::decide_upload(&u, me, origin.device, prekeys, fallback_key, fallback_signature)?;
            Ok(Decision { events: vec![event], outcome })
        }
        _ => Err(reject(RejectCode::Invalid, "not a user command")),
    }
}

/// Sorted, without duplicates and without the user themself.
fn normalized(users: &[UserId], me: UserId) -> Vec<UserId> {
    let set: BTreeSet<UserId> = users.iter().copied().filter(|u| *u != me).collect();
    set.into_iter().collect()
}

/// The outcome a user-partition event records in the dedup table, computed before
/// the event is folded (a claimed prekey's key is gone afterwards).
///
/// # Panics
/// If a `PrekeyClaimed` names a prekey the state does not hold (corrupt log).
pub(crate) fn outcome_of(kv: &impl Kv, event: &EventBody) -> Outcome {
    if let Some(outcome) = crate::keys::outcome_of(kv, event) {
        return outcome;
    }
    match event {
        EventBody::PrekeyClaimed { user, device, prekey_id, .. } => {
            let key = kv
                .get(prekey_key(*user, *device, *prekey_id).bytes())
                .unwrap_or_else(|| panic!("fold: PrekeyClaimed of unknown prekey {prekey_id} of {user}/{device}"));
            Outcome::PrekeyClaimed { user: *user, device: *device, prekey: Prekey { id: *prekey_id, key } }
        }
        _ => Outcome::Done,
    }
}

/// Folds an upload of one-time keys of `device`: each new key counted, and
/// the device's highest id ever uploaded raised (the never-reuse rule).
pub(crate) fn store_prekeys(kv: &mut impl Kv, u: &mut UserHead, user: UserId, device: DeviceId, prekeys: &[Prekey]) {
    let d = u.devices.entry(device).or_default();
    for p in prekeys {
        let key = prekey_key(user, device, p.id);
        if kv.get(key.bytes()).is_none() {
            d.prekeys += 1;
        }
        kv.put(key.bytes(), p.key.clone());
    }
    if let Some(max) = prekeys.iter().map(|p| p.id).max() {
        let high = u.prekey_high.entry(device).or_insert(max);
        *high = (*high).max(max);
    }
}

/// Folds a user-partition event.
///
/// # Panics
/// If the event names an unregistered user (corrupt log or wrong partition).
pub(crate) fn fold(kv: &mut impl Kv, at_ms: u64, event: &EventBody) {
    // ---- push and reports (issue 14) ----
    if crate::push::is_stateless(event) {
        return;
    }
    if let EventBody::OtpFailed { user } = event {
        // Of a phone, registered or not.
        let mut g = otp_guard(kv, *user);
        g.failures.retain(|t| t.saturating_add(OTP_FAILURE_WINDOW_MS) > at_ms);
        g.failures.push(at_ms);
        if g.failures.len() >= OTP_FAILURES_MAX {
            g.locked_until_ms = at_ms.saturating_add(OTP_LOCK_MS);
            g.failures.clear();
        }
        kv::write(kv, &guard_key(*user), &g);
        return;
    }
    if let EventBody::UserRegistered { user, phone } = event {
        assert!(head(kv, *user).is_none(), "fold: UserRegistered for registered user {user}");
        put_head(kv, *user, &UserHead { phone: phone.clone(), ..UserHead::default() });
        return;
    }
    let Some(user) = event.user() else {
        unreachable!("fold: {} is not a user event", event.kind());
    };
    let mut u = head(kv, user).unwrap_or_else(|| panic!("fold: {} for unregistered user {user}", event.kind()));
    match event {
        EventBody::DeviceLinked { device, .. } => {
            u.devices.insert(*device, DeviceHead::default());
            crate::keys::fold(kv, user, &mut u, event);
        }
        EventBody::DeviceUnlinked { device, .. } => {
            u.devices.remove(device);
            crate::keys::fold(kv, user, &mut u, event);
            let prefix = Key::new(kv::PREKEY).user(user).device(*device);
            for (k, _) in kv.scan(prefix.bytes(), usize::MAX) {
                kv.delete(&k);
            }
        }
        EventBody::PresenceChanged { online, device, connection, device_online, .. } => {
            let key = online_key(user, *device);
            if *device_online {
                kv::write(kv, &key, connection);
            } else {
                kv.delete(key.bytes());
            }
            u.online = *online;
        }
        EventBody::PrekeysUploaded { device, prekeys, .. } => store_prekeys(kv, &mut u, user, *device, prekeys),
        EventBody::PrekeyClaimed { device, prekey_id, .. } => {
            if let Some(d) = u.devices.get_mut(device) {
                let key = prekey_key(user, *device, *prekey_id);
                if kv.get(key.bytes()).is_some() {
                    kv.delete(key.bytes());
                    d.prekeys -= 1;
                }
            }
        }
        EventBody::UserBlocked { target, .. } => {
            if !is_blocked(kv, user, *target) {
                kv.put(block_key(user, *target).bytes(), Vec::new());
                u.blocked += 1;
            }
        }
        EventBody::UserUnblocked { target, .. } => {
            if is_blocked(kv, user, *target) {
                kv.delete(block_key(user, *target).bytes());
                u.blocked -= 1;
            }
        }
        EventBody::SessionCreated { device, token_hash, .. } => {
            let d = u
                .devices
                .get_mut(device)
                .unwrap_or_else(|| panic!("fold: SessionCreated for unlinked device {user}/{device}"));
            d.session = Some(*token_hash);
        }
        EventBody::SessionRevoked { device, .. } => {
            if let Some(d) = u.devices.get_mut(device) {
                d.session = None;
            }
        }
        EventBody::RegistrationPinSet { pin_hash: pin, .. } => {
            match pin {
                Some(h) => kv::write(kv, &pin_key(user), h),
                None => kv.delete(pin_key(user).bytes()),
            }
            return;
        }
        EventBody::StatusPosted { status_id, acl, expires_at_ms, audience, .. } => {
            // Compaction: the records of this user's posts that expired more
            // than a day ago go (by the log's own time, so every replica and
            // every replay deletes the same ones).
            let prefix = Key::new(kv::STATUS).user(user);
            for (k, v) in kv.scan(prefix.bytes(), usize::MAX) {
                let old: StatusRecord = kv::decode(&k, &v);
                if old.expires_at_ms.saturating_add(DAY_MS) <= at_ms {
                    kv.delete(&k);
                }
            }
            let rec =
                StatusRecord { expires_at_ms: *expires_at_ms, audience: *audience, acl: acl.clone(), viewers: vec![] };
            kv::write(kv, &status_key(user, *status_id), &rec);
            return;
        }
        EventBody::StatusViewed { status_id, viewer, .. } => {
            if let Some(mut s) = status(kv, user, *status_id) {
                if let Err(i) = s.viewers.binary_search(viewer) {
                    s.viewers.insert(i, *viewer);
                    kv::write(kv, &status_key(user, *status_id), &s);
                }
            }
            return;
        }
        EventBody::ContactsUpdated { contacts, .. } => {
            kv::write(kv, &contacts_key(user), contacts);
            return;
        }
        EventBody::ContactLookupRecorded { hashes, .. } => {
            let day = at_ms / DAY_MS;
            let used = lookups_on(kv, user, at_ms);
            kv::write(kv, &lookups_key(user), &LookupCount { day, hashes: used.saturating_add(*hashes) });
            return;
        }
        EventBody::ProfileUpdated { .. } | EventBody::PrivacyChanged { .. } => return,
        // ---- E2EE (issue 14) ----
        EventBody::DeviceKeysUploaded { .. } | EventBody::DeviceKeysClaimed { .. } => {
            crate::keys::fold(kv, user, &mut u, event);
        }
        // The media view counts uploads; the partition keeps nothing of them.
        EventBody::MediaUploaded { .. } => return,
        _ => unreachable!("fold: {} is not a user event", event.kind()),
    }
    put_head(kv, user, &u);
}
