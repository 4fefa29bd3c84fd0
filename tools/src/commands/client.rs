//! `chorus client`: a command-line chat client on the SDK.
//!
//! End-to-end encrypted (the SDK's [`chorus_client::e2ee`]): a device's
//! crypto store (its keys and sessions) is the directory next to its profile
//! file (`client.json` -> `client.e2ee/`), encrypted with a key kept in the
//! profile. A profile from before E2EE (no key) talks in the clear.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chorus_client::content::Content;
use chorus_client::e2ee::CryptoStore;
use chorus_client::{self as client, Client, ClientConfig, Credentials, Event, Resume};
use chorus_schema::edge::{normalize_phone, user_for_phone};
use chorus_schema::{ChatId, GroupOp, ReceiptKind, Recipient, UserId, Visibility};
use serde::{Deserialize, Serialize};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Edge address(es), tried in turn.
    #[arg(long = "edge", default_value = "127.0.0.1:7300")]
    pub edges: Vec<String>,
    /// The edge CA, which signs the edges' server certificates.
    #[arg(long, default_value = "data/tls/edge-ca.pem")]
    pub ca: PathBuf,
    /// Where this device's credentials and positions are kept.
    #[arg(long, default_value = "data/client.json")]
    pub profile: PathBuf,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Without --code: text a code to the phone. With --code: register this
    /// device and save its credentials in the profile.
    Register {
        #[arg(long)]
        phone: String,
        #[arg(long)]
        code: Option<String>,
        #[arg(long, default_value = "cli")]
        name: String,
        /// The account's registration PIN, if it set one (`set-pin`).
        #[arg(long)]
        pin: Option<String>,
    },
    /// Set the account's registration PIN (registering the number on a new
    /// device then needs it); an empty PIN removes it.
    SetPin { pin: String },
    /// Unlink a device of this account (its connections close at once; it
    /// can no longer log in). The device: as listed by `devices`.
    Unlink {
        /// The device id.
        #[arg(required_unless_present = "device_flag")]
        device: Option<u32>,
        /// The device id (as an option, the older spelling).
        #[arg(long = "device", conflicts_with = "device")]
        device_flag: Option<u32>,
    },
    /// Link a companion device, the way a QR code pairs one. On the new
    /// device: `link --new` prints a one-time code and waits until a logged-in
    /// device of the account links it, then saves this device's credentials
    /// in the profile. On a logged-in device: `link <code>`. An account has at
    /// most the primary and 4 companions.
    Link {
        /// The code the new device shows (on the logged-in device).
        #[arg(required_unless_present = "new")]
        code: Option<String>,
        /// This is the new device: print a code and wait to be linked.
        #[arg(long, conflicts_with = "code")]
        new: bool,
        /// The new device's name.
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// The devices of this account: id, name, when it was linked.
    Devices,
    /// Block a user (id or +phone): their direct messages are refused. With
    /// --unblock: accept them again.
    Block {
        user: String,
        #[arg(long)]
        unblock: bool,
    },
    /// Unblock a user (id or +phone): the same as `block --unblock`.
    Unblock { user: String },
    /// This user's profile (`set`) or another's as this user may see it (`get`).
    Profile {
        #[command(subcommand)]
        cmd: ProfileCmd,
    },
    /// Contact sync: upload phone numbers (hashed with the deployment's key);
    /// prints the registered ones, which become this user's contacts.
    Contacts {
        #[command(subcommand)]
        cmd: ContactsCmd,
    },
    /// Status stories: post, list, view.
    Status {
        #[command(subcommand)]
        cmd: StatusCmd,
    },
    /// End this device's session (its connections close at once) and forget
    /// the profile's credentials.
    Logout,
    /// Log in with the profile's credentials and print who this is.
    Login,
    /// Send a text to a user (id or +phone) and wait until it is committed.
    Send {
        /// A user id or a phone number (+…).
        #[arg(long)]
        to: String,
        #[arg(required_unless_present = "file")]
        text: Option<String>,
        /// Attach this file: encrypted with its own key, uploaded (resumed
        /// after a dropped connection), with a thumbnail if it is an image.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Download and decrypt an attachment this profile received (`listen`
    /// remembers them, by the BLAKE3 hex it prints).
    Download {
        /// The attachment's BLAKE3 hex (or a unique prefix of it).
        hash: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Print incoming messages and receipts; acks them as delivered (and read
    /// with --read). Resumes from the profile's positions and saves them.
    Listen {
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<usize>,
        /// Stop after this long without anything new (ms).
        #[arg(long)]
        idle_ms: Option<u64>,
        #[arg(long)]
        read: bool,
    },
    /// Groups: create one, change its members and admins, leave it, rename
    /// it, send to it. Only admins edit; the log enforces it.
    Group {
        #[command(subcommand)]
        cmd: GroupCmd,
    },
    /// Watch users' presence (ids or +phones): prints each one's state now
    /// and every change, as their privacy settings allow.
    Presence {
        #[arg(required = true, value_delimiter = ',')]
        users: Vec<String>,
        /// Stop after this long (ms); default: until interrupted.
        #[arg(long)]
        for_ms: Option<u64>,
    },
    /// Tell a chat's other members this user is typing (refreshed every 3 s
    /// for --for-ms, then stopped); prints who else types there meanwhile.
    Typing {
        /// The chat id (32 hex digits), as printed by `chats`.
        chat: ChatId,
        #[arg(long, default_value_t = 5_000)]
        for_ms: u64,
    },
    /// Set who sees this user's last seen and online status, profile photo
    /// and about: everyone, contacts or nobody.
    Privacy {
        #[arg(long, default_value = "everyone", value_parser = visibility)]
        last_seen: Visibility,
        #[arg(long, alias = "photo", default_value = "everyone", value_parser = visibility)]
        profile_photo: Visibility,
        #[arg(long, default_value = "everyone", value_parser = visibility)]
        about: Visibility,
        /// Send no read receipts.
        #[arg(long)]
        no_read_receipts: bool,
    },
    /// The chats this device has messages in (synced from the start).
    Chats,
    /// Every message of one chat (synced from the start).
    History {
        /// The chat id (32 hex digits), as printed by `chats`.
        #[arg(long)]
        chat: String,
    },
    // ---- push and reports (issue 14) ----
    /// This device's push token: messages for this user while none of its
    /// devices is online are pushed to it.
    Push {
        #[command(subcommand)]
        cmd: PushCmd,
    },
    /// Report a user (id or +phone) as abusive, optionally revealing the
    /// last messages they sent in the chat.
    Report {
        user: String,
        /// The chat (32 hex digits); default: the direct chat with the user.
        #[arg(long)]
        chat: Option<String>,
        /// Why (free text).
        #[arg(long, default_value = "")]
        reason: String,
        /// Attach the last N messages the user sent in the chat, as this
        /// profile's `listen` received and decrypted them (at most 10).
        #[arg(long, default_value_t = 0)]
        attach: usize,
    },
    // ---- E2EE (issue 14) ----
    /// The safety number of this user and another (id or +phone): 60 digits
    /// from both users' device identity keys, the same on both sides; compare
    /// them out of band (read aloud, side by side) to rule out a key swap.
    Verify { user: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum PushCmd {
    /// Register (or replace) this device's push token.
    Register {
        token: String,
        /// The push service, e.g. fcm or apns.
        #[arg(long, default_value = "fcm")]
        platform: String,
    },
    /// Remove this device's push token.
    Clear,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum VisibilityArg {
    Everyone,
    Contacts,
    Nobody,
}

impl From<VisibilityArg> for chorus_schema::Visibility {
    fn from(v: VisibilityArg) -> Self {
        match v {
            VisibilityArg::Everyone => chorus_schema::Visibility::Everyone,
            VisibilityArg::Contacts => chorus_schema::Visibility::Contacts,
            VisibilityArg::Nobody => chorus_schema::Visibility::Nobody,
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum AudienceArg {
    /// My contacts.
    Contacts,
    /// My contacts except --users.
    Except,
    /// Only --users.
    Only,
}

#[derive(Debug, clap::Subcommand)]
pub enum ProfileCmd {
    /// Set this user's name, about text and (optionally) picture, given as
    /// the BLAKE3 hex of an uploaded media object.
    Set {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        about: String,
        #[arg(long)]
        picture: Option<String>,
    },
    /// Another user's profile (id or +phone), as this user may see it.
    Get { user: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum ContactsCmd {
    /// Upload these phone numbers; print the registered ones.
    Sync { phones: Vec<String> },
}

#[derive(Debug, clap::Subcommand)]
pub enum StatusCmd {
    /// Post a text status, visible 24 h (or --ttl-ms, less).
    Post {
        text: String,
        #[arg(long, value_enum, default_value = "contacts")]
        audience: AudienceArg,
        /// Users (ids or +phones, comma-separated) for `except` and `only`.
        #[arg(long, value_delimiter = ',')]
        users: Vec<String>,
        #[arg(long, default_value_t = 0)]
        ttl_ms: u64,
        /// The post's id (default: the current time in ms).
        #[arg(long)]
        id: Option<u64>,
        /// A picture or video, as `<BLAKE3 hex>:<bytes>:<MIME type>` of an
        /// uploaded media object (the text is its caption).
        #[arg(long)]
        media: Option<String>,
    },
    /// The live statuses this user may see: of one user, or of every contact.
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// Mark a status as viewed (its author sees it).
    View {
        #[arg(long)]
        user: String,
        #[arg(long)]
        id: u64,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum GroupCmd {
    /// Create a group with this user as its admin; prints its chat id.
    Create {
        #[arg(long)]
        name: String,
        /// The other members: user ids or +phones, comma-separated.
        #[arg(long, value_delimiter = ',')]
        members: Vec<String>,
    },
    /// Add a member (admins only).
    Add {
        #[arg(long)]
        chat: ChatId,
        user: String,
    },
    /// Remove a member (admins only): they get nothing sent after it.
    Remove {
        #[arg(long)]
        chat: ChatId,
        user: String,
    },
    /// Make a member an admin (admins only).
    Promote {
        #[arg(long)]
        chat: ChatId,
        user: String,
    },
    /// Make an admin a plain member (admins only; never the last admin).
    Demote {
        #[arg(long)]
        chat: ChatId,
        user: String,
    },
    /// Leave the group; if this was its last admin, the oldest member becomes one.
    Leave {
        #[arg(long)]
        chat: ChatId,
    },
    /// Change the group's name and description (admins only).
    Edit {
        #[arg(long)]
        chat: ChatId,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// The group's picture: the BLAKE3 hex of an uploaded media object
        /// (none: no picture).
        #[arg(long)]
        icon: Option<String>,
    },
    /// Send a text to the group and wait until it is committed.
    Send {
        #[arg(long)]
        chat: ChatId,
        text: String,
    },
    /// The group's name, description, members and admins (members only);
    /// with `--seq`, who received and read this user's message at that seq,
    /// and when (its sender only).
    Info {
        #[arg(long)]
        chat: ChatId,
        /// A message of this user: print its info instead.
        #[arg(long)]
        seq: Option<u64>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Profile {
    credentials: Credentials,
    #[serde(default)]
    resume: Resume,
    /// The crypto store's key (64 hex digits); none: a profile from before E2EE.
    #[serde(default)]
    store_key: Option<String>,
}

/// The crypto store of the device of the profile at `path`.
fn crypto_store(path: &Path, key_hex: &str) -> Result<CryptoStore> {
    let key: [u8; 32] = hex::decode(key_hex)
        .ok()
        .and_then(|k| k.try_into().ok())
        .with_context(|| format!("{}: store_key must be 64 hex digits", path.display()))?;
    Ok(CryptoStore::new(path.with_extension("e2ee"), key))
}

/// A new store key and the identity key of a new device's crypto store
/// (created next to the profile at `path`, before registering).
fn new_device_keys(path: &Path) -> Result<(String, Vec<u8>)> {
    let key_hex = hex::encode(rand::random::<[u8; 32]>());
    let store = crypto_store(path, &key_hex)?;
    if store.dir().exists() {
        std::fs::remove_dir_all(store.dir()).with_context(|| format!("remove {}", store.dir().display()))?;
    }
    let identity = chorus_client::e2ee::prepare(&store)?;
    Ok((key_hex, identity))
}

/// Logs in with the profile, end-to-end encrypted when it has a store key.
async fn connect(
    config: ClientConfig,
    path: &Path,
    p: &Profile,
    resume: Resume,
) -> Result<(Client, tokio::sync::mpsc::Receiver<Event>)> {
    Ok(match &p.store_key {
        Some(key) => Client::connect(config, p.credentials, resume, crypto_store(path, key)?).await?,
        None => Client::connect_raw(config, p.credentials, resume).await?,
    })
}

fn load(path: &Path) -> Result<Profile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read {} (register first: chorus client register)", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

fn save(path: &Path, profile: &Profile) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(profile)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn recipient(to: &str) -> Result<UserId> {
    if to.starts_with('+') {
        return Ok(user_for_phone(&normalize_phone(to)?)?);
    }
    to.parse::<u64>().map(UserId).with_context(|| format!("{to:?} is neither a user id nor a +phone"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub async fn run(args: Args) -> Result<()> {
    let config = ClientConfig::new(args.edges.clone(), args.ca.clone());
    match args.cmd {
        Cmd::Register { phone, code: None, .. } => {
            let ttl = client::request_otp(&config, &phone).await?;
            println!("code sent to {phone}, valid {} s; run again with --code", ttl / 1000);
        }
        Cmd::Register { phone, code: Some(code), name, pin } => {
            let (store_key, identity) = new_device_keys(&args.profile)?;
            let credentials =
                client::verify_otp_with_pin(&config, &phone, &code, &name, identity, pin.as_deref()).await?;
            save(&args.profile, &Profile { credentials, resume: Resume::default(), store_key: Some(store_key) })?;
            println!(
                "registered user {} device {}; credentials in {}",
                credentials.user,
                credentials.device,
                args.profile.display()
            );
            // Publish the device's keys now (the first login uploads them),
            // so that others can write to it before it first listens.
            let p = load(&args.profile)?;
            let (c, _events) = connect(config, &args.profile, &p, Resume::default()).await?;
            c.close();
        }
        Cmd::SetPin { pin } => {
            let p = load(&args.profile)?;
            let (c, _events) = connect(config, &args.profile, &p, p.resume.clone()).await?;
            c.set_pin(&pin).await?;
            println!("{}", if pin.is_empty() { "registration PIN removed" } else { "registration PIN set" });
            c.close();
        }
        Cmd::Link { new: true, name, .. } => {
            if args.profile.exists() {
                bail!(
                    "{} holds a device's credentials already: link the new device with another --profile",
                    args.profile.display()
                );
            }
            let (store_key, identity) = new_device_keys(&args.profile)?;
            let pairing = client::pair_request(&config, &name, identity).await?;
            // The code on a line of its own, first: scripts read it from there.
            println!("{}", pairing.code());
            eprintln!(
                "on a logged-in device of the account, run: chorus client link {} (valid {} s)",
                pairing.code(),
                pairing.expires_in_ms() / 1000
            );
            let credentials = pairing.wait().await?;
            save(&args.profile, &Profile { credentials, resume: Resume::default(), store_key: Some(store_key) })?;
            println!(
                "linked as user {} device {}; credentials in {}",
                credentials.user,
                credentials.device,
                args.profile.display()
            );
            // Publish the device's keys now (the first login uploads them),
            // so that others can write to it before it first listens.
            let p = load(&args.profile)?;
            let (c, _events) = connect(config, &args.profile, &p, Resume::default()).await?;
            c.close();
        }
        Cmd::Link { code, .. } => {
            let code = code.context("the code the new device shows")?;
            let p = load(&args.profile)?;
            let (c, _events) = connect(config, &args.profile, &p, p.resume.clone()).await?;
            let linked = c.link_device(&code).await;
            c.close();
            linked?;
            println!("device linked");
        }
        Cmd::Devices => {
            let p = load(&args.profile)?;
            let (c, _events) = connect(config, &args.profile, &p, p.resume.clone()).await?;
            let devices = c.devices().await;
            c.close();
            for d in devices? {
                let me = if d.device == p.credentials.device { "  (this device)" } else { "" };
                println!("{}  {}  linked at {} ms{me}", d.device, d.name, d.linked_at_ms);
            }
        }
        Cmd::Unlink { device, device_flag } => {
            let device = device.or(device_flag).context("which device")?;
            let p = load(&args.profile)?;
            let (c, _events) = connect(config, &args.profile, &p, p.resume.clone()).await?;
            c.unlink_device(chorus_schema::DeviceId(device)).await?;
            println!("device {device} unlinked");
            c.close();
        }
        Cmd::Block { user, unblock } => {
            let p = load(&args.profile)?;
            let (c, _events) = connect(config, &args.profile, &p, p.resume.clone()).await?;
            let target = recipient(&user)?;
            c.block(target, !unblock).await?;
            println!("user {target} {}", if unblock { "unblocked" } else { "blocked" });
            c.close();
        }
        Cmd::Unblock { user } => {
            let p = load(&args.profile)?;
            let (c, _events) = connect(config, &args.profile, &p, p.resume.clone()).await?;
            let target = recipient(&user)?;
            c.block(target, false).await?;
            println!("user {target} unblocked");
            c.close();
        }
        Cmd::Profile { cmd } => {
            let p = load(&args.profile)?;
            let (c, _events) = connect(config, &args.profile, &p, p.resume.clone()).await?;
            match cmd {
                ProfileCmd::Set { name, about, picture } => {
                    let avatar = picture.map(|h| image_ref(&h, "--picture")).transpose()?;
                    c.set_profile(&name, &about, avatar).await?;
                    println!("profile set");
                }
                ProfileCmd::Get { user } => {
                    let pr = c.profile(recipient(&user)?).await?;
                    if !pr.found {
                        println!("user {} has no profile", pr.user);
                    } else {
                        println!("user {}: {}", pr.user, pr.name);
                        println!("about: {}", pr.about.as_deref().unwrap_or("(hidden)"));
                        match &pr.avatar {
                            Some(a) => println!("picture: {}", blake3::Hash::from(a.blake3).to_hex()),
                            None => println!("picture: none, or hidden from you"),
                        }
                    }
                }
            }
            c.close();
        }
        Cmd::Contacts { cmd: ContactsCmd::Sync { phones } } => {
            let p = load(&args.profile)?;
            let (c, _events) = connect(config, &args.profile, &p, p.resume.clone()).await?;
            let matches = c.sync_contacts(&phones).await?;
            let key = |phone: &str| normalize_phone(phone).ok().and_then(|n| user_for_phone(&n).ok());
            for phone in &phones {
                if let Some(m) = matches.iter().find(|m| key(phone) == Some(m.user)) {
                    println!("{phone} user {}", m.user);
                }
            }
            println!("{} of {} registered", matches.len(), phones.len());
            c.close();
        }
        Cmd::Status { cmd } => {
            let p = load(&args.profile)?;
            let (c, _events) = connect(config, &args.profile, &p, p.resume.clone()).await?;
            match cmd {
                StatusCmd::Post { text, audience, users, ttl_ms, id, media } => {
                    let users = users.iter().map(|u| recipient(u)).collect::<Result<Vec<_>>>()?;
                    let audience = match audience {
                        AudienceArg::Contacts => chorus_schema::StatusAudience::Contacts,
                        AudienceArg::Except => chorus_schema::StatusAudience::ContactsExcept,
                        AudienceArg::Only => chorus_schema::StatusAudience::OnlyShareWith,
                    };
                    let id = id.unwrap_or_else(|| {
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                            .unwrap_or(1)
                    });
                    let media = media.map(|h| media_ref(&h, "--media")).transpose()?;
                    let post = chorus_client::StatusPost {
                        status_id: id,
                        ciphertext: text.into_bytes(),
                        media,
                        audience,
                        users,
                        ttl_ms,
                    };
                    c.post_status(post).await?;
                    println!("status {id} posted");
                }
                StatusCmd::List { user } => {
                    let author = user.map(|u| recipient(&u)).transpose()?;
                    for e in c.statuses(author).await? {
                        let viewers: Vec<String> = e.viewers.iter().map(ToString::to_string).collect();
                        println!(
                            "user {} status {} until {}: {}{}",
                            e.author,
                            e.status_id,
                            e.expires_at_ms,
                            match &e.media {
                                Some(m) =>
                                    format!("[{} {} bytes] {}", m.mime, m.size, String::from_utf8_lossy(&e.ciphertext)),
                                None => String::from_utf8_lossy(&e.ciphertext).into_owned(),
                            },
                            if viewers.is_empty() {
                                String::new()
                            } else {
                                format!(" (viewed by {})", viewers.join(","))
                            }
                        );
                    }
                }
                StatusCmd::View { user, id } => {
                    let author = recipient(&user)?;
                    c.view_status(author, id).await?;
                    println!("status {id} of user {author} viewed");
                }
            }
            c.close();
        }
        Cmd::Logout => {
            let p = load(&args.profile)?;
            let (c, _events) = connect(config, &args.profile, &p, p.resume.clone()).await?;
            c.logout().await?;
            std::fs::remove_file(&args.profile).with_context(|| format!("remove {}", args.profile.display()))?;
            println!("logged out; removed {}", args.profile.display());
        }
        Cmd::Login => {
            let p = load(&args.profile)?;
            let (c, _events) = connect(config, &args.profile, &p, p.resume.clone()).await?;
            println!("logged in as user {} device {}", p.credentials.user, p.credentials.device);
            c.close();
        }
        Cmd::Send { to, text: body, file: None } => {
            let p = load(&args.profile)?;
            let (c, _events) = connect(config, &args.profile, &p, p.resume.clone()).await?;
            let sent = c.send(Recipient::User(recipient(&to)?), body.unwrap_or_default().into_bytes()).await?;
            println!("sent chat {} seq {} (client_msg_id {})", sent.chat, sent.seq, sent.client_msg_id.0);
            c.close();
        }
        Cmd::Send { to, text: body, file: Some(path) } => {
            let p = load(&args.profile)?;
            let plain = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "file".into());
            let (c, _events) = connect(config, &args.profile, &p, p.resume.clone()).await?;
            let (attachment, up) = c.upload_file(&plain, &name).await?;
            eprintln!(
                "uploaded {} bytes ({}) as {}{}",
                attachment.size,
                attachment.mime,
                hex::encode(attachment.blake3),
                if up.deduplicated { ", stored already" } else { "" }
            );
            let media = attachment.media_ref();
            let content = Content { text: body.unwrap_or_default(), attachment: Some(attachment) };
            let sent = c.send_with_media(Recipient::User(recipient(&to)?), content.encode(), media).await?;
            println!("sent chat {} seq {} (client_msg_id {})", sent.chat, sent.seq, sent.client_msg_id.0);
            c.close();
        }
        Cmd::Download { hash, out } => {
            let p = load(&args.profile)?;
            let known = attachments::load(&args.profile)?;
            let a = attachments::find(&known, &hash)?;
            let (c, _events) = connect(config, &args.profile, &p, p.resume.clone()).await?;
            let plain = c.download_file(&a).await?;
            std::fs::write(&out, &plain).with_context(|| format!("write {}", out.display()))?;
            println!("wrote {} bytes of {} ({}) to {}", plain.len(), a.file_name, a.mime, out.display());
            c.close();
        }
        Cmd::Listen { count, idle_ms, read } => {
            let mut p = load(&args.profile)?;
            let (c, mut events) = connect(config, &args.profile, &p, p.resume.clone()).await?;
            let mut got = 0usize;
            let idle = idle_ms.map(Duration::from_millis).unwrap_or(Duration::MAX);
            loop {
                let ev = match tokio::time::timeout(idle, events.recv()).await {
                    Ok(Some(ev)) => ev,
                    Ok(None) => bail!("client stopped"),
                    Err(_) => break,
                };
                match ev {
                    Event::Message(m) => {
                        let content = Content::decode(&m.ciphertext);
                        let mut line = content.text.clone();
                        history::remember(&args.profile, &m, &content.text)?;
                        if let Some(a) = &content.attachment {
                            attachments::remember(&args.profile, a)?;
                            line.push_str(&format!(
                                " [attachment {} ({}, {} bytes{}) {}]",
                                a.file_name,
                                a.mime,
                                a.size,
                                if a.thumbnail.is_some() { ", thumbnail" } else { "" },
                                hex::encode(a.blake3)
                            ));
                        }
                        println!("[{} #{}] {}/{}: {}", m.chat, m.seq, m.sender, m.sender_device, line);
                        c.ack(m.chat, if read { ReceiptKind::Read } else { ReceiptKind::Delivered }, m.seq);
                        got += 1;
                        if count.is_some_and(|n| got >= n) {
                            break;
                        }
                    }
                    Event::ChatChange(ch) => println!("[{} #{}] {}", ch.chat, ch.seq, describe(&ch)),
                    Event::Receipt { chat, up_to_seq, status } => println!("[{chat}] up to #{up_to_seq}: {status:?}"),
                    Event::Synced { chats } => eprintln!("synced ({chats} chats had news)"),
                    Event::Connected { edge } => eprintln!("connected to {edge}"),
                    Event::Disconnected { reason } => eprintln!("disconnected: {reason}"),
                    Event::Error { code, message } => eprintln!("error {code:?}: {message}"),
                    Event::Device { kind, device, at_ms } => {
                        eprintln!("device {device} of this account: {kind:?} at {at_ms}")
                    }
                    Event::Presence { .. } | Event::Typing { .. } => print_event(&ev),
                    Event::KeysLow { left } => {
                        let what = if c.is_e2ee() { "the SDK uploaded more" } else { "upload more" };
                        eprintln!("only {left} one-time keys were left on this device: {what}");
                    }
                    Event::Undecryptable { chat, seq, sender, sender_device, reason } => {
                        println!("[{chat} #{seq}] {sender}/{sender_device}: (cannot decrypt: {reason})");
                        c.ack(chat, if read { ReceiptKind::Read } else { ReceiptKind::Delivered }, seq);
                        // This device's own direct messages from an earlier
                        // run come back undecryptable (Olm has no key for
                        // its sender): not counted.
                        if (sender, sender_device) != (p.credentials.user, p.credentials.device) {
                            got += 1;
                        }
                        if count.is_some_and(|n| got >= n) {
                            break;
                        }
                    }
                }
            }
            // Give the acks a moment to leave before closing.
            tokio::time::sleep(Duration::from_millis(300)).await;
            p.resume = Resume { positions: c.positions() };
            save(&args.profile, &p)?;
            c.close();
        }
        Cmd::Privacy { last_seen, profile_photo, about, no_read_receipts } => {
            let p = load(&args.profile)?;
            let (c, _events) = connect(config, &args.profile, &p, p.resume.clone()).await?;
            let done = c.set_privacy(last_seen, profile_photo, about, !no_read_receipts).await;
            c.close();
            done?;
            println!("privacy set: last seen {last_seen:?}, profile photo {profile_photo:?}, about {about:?}");
        }
        Cmd::Presence { users, for_ms } => {
            let p = load(&args.profile)?;
            let users = users.iter().map(|u| recipient(u)).collect::<Result<Vec<_>>>()?;
            let (c, mut events) = connect(config, &args.profile, &p, p.resume.clone()).await?;
            c.subscribe_presence(users);
            let until =
                tokio::time::Instant::now() + for_ms.map_or(Duration::from_secs(365 * 86_400), Duration::from_millis);
            while let Ok(Some(ev)) = tokio::time::timeout_at(until, events.recv()).await {
                print_event(&ev);
            }
            c.close();
        }
        Cmd::Typing { chat, for_ms } => {
            let p = load(&args.profile)?;
            let (c, mut events) = connect(config, &args.profile, &p, p.resume.clone()).await?;
            let until = tokio::time::Instant::now() + Duration::from_millis(for_ms);
            let mut refresh = tokio::time::interval(Duration::from_secs(3));
            loop {
                tokio::select! {
                    _ = refresh.tick() => c.typing(chat, true),
                    ev = events.recv() => match ev {
                        Some(Event::Error { code, message }) => bail!("{code:?}: {message}"),
                        Some(ev @ Event::Typing { .. }) => print_event(&ev),
                        Some(_) => {}
                        None => bail!("client stopped"),
                    },
                    () = tokio::time::sleep_until(until) => break,
                }
            }
            c.typing(chat, false);
            // Let the stop leave (and a NotMember come back) before closing.
            let settle = tokio::time::Instant::now() + Duration::from_millis(500);
            while let Ok(Some(ev)) = tokio::time::timeout_at(settle, events.recv()).await {
                if let Event::Error { code, message } = ev {
                    bail!("{code:?}: {message}");
                }
            }
            println!("typed in {chat} for {for_ms} ms");
            c.close();
        }
        Cmd::Group { cmd } => {
            let p = load(&args.profile)?;
            let (c, _events) = connect(config, &args.profile, &p, p.resume.clone()).await?;
            let done = group(&c, cmd).await;
            c.close();
            println!("{}", done?);
        }
        Cmd::Chats | Cmd::History { .. } => {
            let p = load(&args.profile)?;
            let wanted = match &args.cmd {
                Cmd::History { chat } => Some(chat.parse::<ChatId>().map_err(|e| anyhow::anyhow!("--chat: {e}"))?),
                _ => None,
            };
            let (c, mut events) = connect(config, &args.profile, &p, Resume::default()).await?;
            let mut chats: std::collections::BTreeMap<ChatId, (u64, String, u64)> = Default::default();
            loop {
                match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
                    Ok(Some(Event::Message(m))) => {
                        if wanted == Some(m.chat) {
                            println!(
                                "#{} {}/{} at {}: {}",
                                m.seq,
                                m.sender,
                                m.sender_device,
                                m.at_ms,
                                text(&m.ciphertext)
                            );
                        }
                        let e = chats.entry(m.chat).or_default();
                        *e = (e.0 + 1, text(&m.ciphertext), m.seq.0);
                    }
                    Ok(Some(Event::ChatChange(ch))) if wanted == Some(ch.chat) => {
                        println!("#{} at {}: {}", ch.seq, ch.at_ms, describe(&ch));
                    }
                    Ok(Some(Event::Synced { .. })) => break,
                    Ok(Some(_)) => {}
                    Ok(None) => bail!("client stopped"),
                    Err(_) => bail!("no sync within 30 s"),
                }
            }
            if wanted.is_none() {
                for (chat, (n, last, seq)) in chats {
                    println!("{chat}  {n} messages from others, last #{seq}: {last}");
                }
            }
            c.close();
        }
        Cmd::Push { cmd } => {
            let p = load(&args.profile)?;
            let (c, _events) = connect(config, &args.profile, &p, p.resume.clone()).await?;
            let done = match &cmd {
                PushCmd::Register { token, platform } => c.register_push(token, platform).await,
                PushCmd::Clear => c.register_push("", "").await,
            };
            c.close();
            done?;
            match cmd {
                PushCmd::Register { .. } => println!("push token registered"),
                PushCmd::Clear => println!("push token removed"),
            }
        }
        Cmd::Report { user, chat, reason, attach } => {
            let p = load(&args.profile)?;
            let me = p.credentials.user;
            let target = recipient(&user)?;
            let chat = match chat {
                Some(c) => Some(c.parse::<ChatId>().map_err(|e| anyhow::anyhow!("--chat: {e}"))?),
                None if target != me => Some(ChatId::direct(me, target)),
                None => None,
            };
            if attach > chorus_schema::push::MAX_REPORT_MESSAGES {
                bail!("--attach: at most {} messages", chorus_schema::push::MAX_REPORT_MESSAGES);
            }
            // What this device decrypted and `listen` kept: direct messages
            // cannot be decrypted twice (Olm keys are used once), so the
            // messages come from the local history, not from a new sync.
            let messages = match chat {
                Some(chat) if attach > 0 => history::last_from(&args.profile, chat, target, attach)?,
                _ => Vec::new(),
            };
            let (c, _events) = connect(config, &args.profile, &p, p.resume.clone()).await?;
            let n = messages.len();
            let done = c.report(target, chat, &reason, messages).await;
            c.close();
            done?;
            println!("user {target} reported ({n} messages attached)");
        }
        Cmd::Verify { user } => {
            let p = load(&args.profile)?;
            let (c, _events) = connect(config, &args.profile, &p, p.resume.clone()).await?;
            let target = recipient(&user)?;
            let number = c.safety_number(target).await;
            c.close();
            println!("safety number of users {} and {target}:\n{}", p.credentials.user, number?);
        }
    }
    Ok(())
}

/// Carries out one group command; returns what to print.
async fn group(c: &Client, cmd: GroupCmd) -> Result<String> {
    let (chat, op) = match cmd {
        GroupCmd::Create { name, members } => {
            let members = members.iter().map(|m| recipient(m)).collect::<Result<Vec<_>>>()?;
            let n = members.len() + 1;
            let chat = c.create_group(&name, members).await?;
            return Ok(format!("created group {chat} ({n} members)"));
        }
        GroupCmd::Info { chat, seq: None } => {
            let info = c.group_info(chat).await?;
            let mut out = format!(
                "group {chat}: {:?} ({} members, as of seq {})\ndescription: {:?}",
                info.name,
                info.members.len(),
                info.last_seq,
                info.description
            );
            if let Some(icon) = &info.icon {
                out.push_str(&format!("\npicture: {}", blake3::Hash::from(icon.blake3).to_hex()));
            }
            for (user, m) in &info.members {
                let role = if m.admin { "admin" } else { "member" };
                out.push_str(&format!("\n  {user}  {role}  since seq {}", m.since));
            }
            return Ok(out);
        }
        GroupCmd::Info { chat, seq: Some(seq) } => {
            let entries = c.message_info(chat, chorus_schema::Seq(seq)).await?;
            let when = |t: Option<u64>| t.map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms"));
            let delivered = entries.iter().filter(|e| e.delivered_at_ms.is_some()).count();
            let read = entries.iter().filter(|e| e.read_at_ms.is_some()).count();
            let mut out = format!(
                "message {seq} of {chat}: delivered to {delivered}, read by {read} of {}\n  user  delivered_at  read_at",
                entries.len()
            );
            for e in &entries {
                out.push_str(&format!("\n  {}  {}  {}", e.user, when(e.delivered_at_ms), when(e.read_at_ms)));
            }
            return Ok(out);
        }
        GroupCmd::Send { chat, text } => {
            let sent = c.send(Recipient::Group(chat), text.into_bytes()).await?;
            return Ok(format!("sent chat {} seq {} (client_msg_id {})", sent.chat, sent.seq, sent.client_msg_id.0));
        }
        GroupCmd::Add { chat, user } => (chat, GroupOp::Add { member: recipient(&user)? }),
        GroupCmd::Remove { chat, user } => (chat, GroupOp::Remove { member: recipient(&user)? }),
        GroupCmd::Promote { chat, user } => (chat, GroupOp::Promote { member: recipient(&user)? }),
        GroupCmd::Demote { chat, user } => (chat, GroupOp::Demote { member: recipient(&user)? }),
        GroupCmd::Leave { chat } => (chat, GroupOp::Leave),
        GroupCmd::Edit { chat, name, description, icon } => {
            let icon = icon.map(|h| image_ref(&h, "--icon")).transpose()?;
            (chat, GroupOp::ChangeInfo { name, description, icon })
        }
    };
    let what = op.name();
    c.group(chat, op).await?;
    Ok(format!("group {chat}: {what} done"))
}

/// One line for a group change, as `listen` prints it.
fn describe(c: &chorus_client::ChatChange) -> String {
    let who = c.actor;
    match &c.change {
        GroupOp::Create { name, members } => {
            let members: Vec<String> = members.iter().map(ToString::to_string).collect();
            format!("{who} created group {name:?} with {}", members.join(", "))
        }
        GroupOp::Add { member } => format!("{who} added {member}"),
        GroupOp::Remove { member } => format!("{who} removed {member}"),
        GroupOp::Promote { member } => format!("{who} made {member} an admin"),
        GroupOp::Demote { member } => format!("{who} dismissed {member} as admin"),
        GroupOp::Leave => format!("{who} left"),
        GroupOp::ChangeInfo { name, description, icon } => {
            let icon = icon.as_ref().map_or_else(|| "no picture".to_owned(), |m| format!("picture {}", m.mime));
            format!("{who} changed the group to {name:?} ({description:?}, {icon})")
        }
    }
}

/// `everyone`, `contacts` or `nobody`.
fn visibility(s: &str) -> Result<Visibility> {
    match s {
        "everyone" => Ok(Visibility::Everyone),
        "contacts" => Ok(Visibility::Contacts),
        "nobody" => Ok(Visibility::Nobody),
        other => bail!("{other:?}: everyone, contacts or nobody"),
    }
}

/// Prints a presence or typing event (`chorus client presence|typing|listen`).
fn print_event(ev: &Event) {
    match ev {
        Event::Presence { user, visible: false, .. } => println!("{user}: hidden"),
        Event::Presence { user, online: true, .. } => println!("{user}: online"),
        Event::Presence { user, last_seen_ms: 0, .. } => println!("{user}: offline (never seen)"),
        Event::Presence { user, last_seen_ms, .. } => println!("{user}: offline, last seen at {last_seen_ms}"),
        Event::Typing { chat, user, typing: true } => println!("[{chat}] {user} is typing"),
        Event::Typing { chat, user, typing: false } => println!("[{chat}] {user} stopped typing"),
        Event::Connected { edge } => eprintln!("connected to {edge}"),
        Event::Disconnected { reason } => eprintln!("disconnected: {reason}"),
        Event::Error { code, message } => eprintln!("error {code:?}: {message}"),
        Event::Undecryptable { chat, seq, sender, sender_device, reason } => {
            println!("[{chat} #{seq}] {sender}/{sender_device}: (cannot decrypt: {reason})")
        }
        _ => {}
    }
}

/// An uploaded image named by the BLAKE3 hex of its bytes (size and type
/// unknown to the CLI).
fn image_ref(hex: &str, flag: &str) -> Result<chorus_schema::MediaRef> {
    let hash = blake3::Hash::from_hex(hex).with_context(|| format!("{flag}: 64 hex digits"))?;
    Ok(chorus_schema::MediaRef { blake3: *hash.as_bytes(), size: 0, mime: "image/*".into() })
}

/// A media object as `<BLAKE3 hex>:<bytes>:<MIME type>`.
fn media_ref(arg: &str, flag: &str) -> Result<chorus_schema::MediaRef> {
    let mut parts = arg.splitn(3, ':');
    let (Some(hex), Some(size), Some(mime)) = (parts.next(), parts.next(), parts.next()) else {
        anyhow::bail!("{flag}: <BLAKE3 hex>:<bytes>:<MIME type>, e.g. {}:52311:image/jpeg", "ab".repeat(32))
    };
    let hash = blake3::Hash::from_hex(hex).with_context(|| format!("{flag}: 64 hex digits first"))?;
    let size = size.parse().with_context(|| format!("{flag}: the size in bytes second"))?;
    let media = chorus_schema::MediaRef { blake3: *hash.as_bytes(), size, mime: mime.to_owned() };
    media.validate().map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
    Ok(media)
}

/// Attachments a profile received (`listen` writes them, `download` reads
/// them): `<profile>.attachments.json`, a JSON object from BLAKE3 hex to the
/// attachment (its key included: keep the file as private as the profile).
/// The messages `listen` decrypted, one JSON line each, next to the profile:
/// what a report may attach (an app keeps such a history in its database).
mod history {
    use std::io::{BufRead, Write};
    use std::path::{Path, PathBuf};

    use anyhow::{Context, Result};
    use chorus_schema::push::ReportedMessage;
    use chorus_schema::{ChatId, Seq, UserId};
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    struct Line {
        chat: String,
        seq: u64,
        sender: u64,
        at_ms: u64,
        text: String,
    }

    fn path(profile: &Path) -> PathBuf {
        profile.with_extension("history.jsonl")
    }

    pub(super) fn remember(profile: &Path, m: &chorus_client::Message, text: &str) -> Result<()> {
        let line =
            Line { chat: m.chat.to_string(), seq: m.seq.0, sender: m.sender.0, at_ms: m.at_ms, text: text.into() };
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path(profile))
            .with_context(|| format!("open {}", path(profile).display()))?;
        writeln!(f, "{}", serde_json::to_string(&line)?)?;
        Ok(())
    }

    /// The last `n` messages `sender` sent in `chat`, oldest first.
    pub(super) fn last_from(profile: &Path, chat: ChatId, sender: UserId, n: usize) -> Result<Vec<ReportedMessage>> {
        let f = match std::fs::File::open(path(profile)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("read {}", path(profile).display())),
        };
        let chat = chat.to_string();
        let mut out = std::collections::VecDeque::new();
        for line in std::io::BufReader::new(f).lines() {
            let l: Line = serde_json::from_str(&line?).context("parse the message history")?;
            if l.chat == chat && l.sender == sender.0 {
                out.push_back(ReportedMessage { seq: Seq(l.seq), sender, at_ms: l.at_ms, text: l.text.into_bytes() });
                if out.len() > n {
                    out.pop_front();
                }
            }
        }
        Ok(out.into())
    }
}

mod attachments {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use anyhow::{bail, Context, Result};
    use chorus_client::content::Attachment;

    fn path(profile: &Path) -> PathBuf {
        profile.with_extension("attachments.json")
    }

    pub(super) fn load(profile: &Path) -> Result<BTreeMap<String, Attachment>> {
        match std::fs::read_to_string(path(profile)) {
            Ok(text) => serde_json::from_str(&text).with_context(|| format!("parse {}", path(profile).display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(e).with_context(|| format!("read {}", path(profile).display())),
        }
    }

    pub(super) fn remember(profile: &Path, a: &Attachment) -> Result<()> {
        let mut all = load(profile)?;
        all.insert(hex::encode(a.blake3), a.clone());
        let tmp = path(profile).with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&all)?)?;
        std::fs::rename(&tmp, path(profile))?;
        Ok(())
    }

    pub(super) fn find(all: &BTreeMap<String, Attachment>, prefix: &str) -> Result<Attachment> {
        let found: Vec<_> = all.iter().filter(|(h, _)| h.starts_with(&prefix.to_ascii_lowercase())).collect();
        match found.as_slice() {
            [(_, a)] => Ok((*a).clone()),
            [] => bail!("no received attachment {prefix} (run `chorus client listen` first)"),
            _ => bail!("{prefix} names {} attachments: give more digits", found.len()),
        }
    }
}
