//! `chorus replay --view <name> --compare <live store>` against a real
//! `chorus dev` process (log-node and projector): every view rebuilt from the
//! log equals the live projector's, and a changed key is reported with a
//! non-zero exit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chorus_log_node::{ClientConfig, LogClient};
use chorus_projections::store::{keys, RocksStore, Txn};
use chorus_schema::{ChatId, ClientMsgId, CommandBody, DeviceId, MediaRef, Origin, ReceiptKind, Seq, UserId};

const CHORUS: &str = env!("CARGO_BIN_EXE_chorus");

fn free_port() -> u16 {
    chorus_testkit::ports::free_port().unwrap()
}

/// A `chorus dev` process, interrupted (then killed) on drop.
struct Dev {
    child: Child,
    client_addr: String,
    data: PathBuf,
}

impl Dev {
    fn must_start(data: &Path) -> Dev {
        let client_addr = format!("127.0.0.1:{}", free_port());
        let raft_addr = format!("127.0.0.1:{}", free_port());
        let edge_addr = format!("127.0.0.1:{}", free_port());
        let mut child = Command::new(CHORUS)
            .args(["dev", "--partitions", "4", "--client-addr", &client_addr, "--raft-addr", &raft_addr])
            .args(["--edge-addr", &edge_addr, "--data"])
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chorus dev");
        // It prints its banner once the node has leaders and the projector is open.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("Ctrl-C stops it") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(60)).expect("chorus dev started");
        Dev { child, client_addr, data: data.to_path_buf() }
    }

    /// `chorus dev`'s certificate of `role` (`<role>-dev`).
    fn tls(&self, role: &str) -> chorus_log_node::network::tls::TlsPaths {
        let dir = self.data.join("tls");
        chorus_log_node::network::tls::TlsPaths {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{role}-dev.pem")),
            key: dir.join(format!("{role}-dev.key")),
        }
    }

    fn live_store(&self) -> PathBuf {
        self.data.join("projector")
    }

    /// `chorus replay --view <view> --out <out> [--compare <live>]`.
    fn replay(&self, view: &str, out: &Path, compare: Option<&Path>) -> Output {
        let mut cmd = Command::new(CHORUS);
        let op = self.tls("operator");
        cmd.args(["replay", "--node", &self.client_addr, "--ca"])
            .arg(op.ca)
            .arg("--cert")
            .arg(op.cert)
            .arg("--key")
            .arg(op.key);
        cmd.args(["--view", view, "--out"]).arg(out);
        cmd.arg("--view-key").arg(self.data.join("tls").join("view.key"));
        if let Some(live) = compare {
            cmd.arg("--compare").arg(live);
        }
        cmd.output().expect("run chorus replay")
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn must_append(client: &LogClient, user: u64, id: u64, body: CommandBody) {
    let origin = Origin { user: UserId(user), device: DeviceId(1), client_msg_id: ClientMsgId(id) };
    let cmd = chorus_schema::Command { origin, body };
    let result = client.append(&cmd).await.unwrap_or_else(|e| panic!("append {cmd:?}: {e}"));
    result.unwrap_or_else(|r| panic!("refused {cmd:?}: {r}"));
}

/// Something in every view.
async fn workload(client: &LogClient) {
    let group = ChatId::group([3; 16]);
    let send = |to: u64, text: &str| CommandBody::SendDirect {
        recipient: UserId(to),
        ciphertext: text.as_bytes().to_vec(),
        media: None,
    };
    must_append(client, 1, 1, send(2, "hi")).await;
    must_append(client, 2, 1, send(1, "hello")).await;
    must_append(
        client,
        1,
        2,
        CommandBody::CreateGroup { chat: group, name: "g".into(), members: vec![UserId(1), UserId(2), UserId(3)] },
    )
    .await;
    must_append(client, 3, 1, CommandBody::SendGroup { chat: group, ciphertext: vec![1], media: None }).await;
    let info = CommandBody::ChangeGroupInfo {
        chat: group,
        name: "g2".into(),
        description: "d".into(),
        icon: Some(MediaRef { blake3: [9; 32], size: 100, mime: "image/png".into() }),
    };
    must_append(client, 1, 4, info).await;
    must_append(client, 1, 3, CommandBody::RemoveMember { chat: group, member: UserId(3) }).await;
    must_append(client, 2, 2, CommandBody::Ack { chat: group, kind: ReceiptKind::Read, up_to_seq: Seq(2) }).await;
    let register = CommandBody::RegisterDevice {
        phone: "4".into(),
        device: DeviceId(1),
        identity_key: vec![1],
        name: "phone".into(),
        token_hash: [9; 32],
        pin_hash: None,
    };
    must_append(client, 4, 1, register).await;
    // Linked devices (issue 12): a companion paired (with its session), one
    // paired and unlinked: the directory keeps names and link times.
    let pair = |device: u32| CommandBody::LinkDevice {
        device: DeviceId(device),
        identity_key: vec![2],
        name: format!("companion {device}"),
        token_hash: Some([device as u8; 32]),
    };
    must_append(client, 4, 2, pair(2)).await;
    must_append(client, 4, 3, pair(3)).await;
    must_append(client, 4, 4, CommandBody::UnlinkDevice { device: DeviceId(3) }).await;
    // Presence, privacy, contacts (issue 12).
    must_append(client, 4, 12, CommandBody::SetPresence { online: true, connection: 7 }).await;
    must_append(client, 4, 13, CommandBody::UpdateContacts { contacts: vec![UserId(1), UserId(2)] }).await;
    let privacy = CommandBody::SetPrivacy {
        last_seen: chorus_schema::Visibility::Contacts,
        profile_photo: chorus_schema::Visibility::Everyone,
        about: chorus_schema::Visibility::Nobody,
        read_receipts: false,
    };
    must_append(client, 4, 14, privacy).await;
    must_append(client, 4, 15, CommandBody::Block { target: UserId(3) }).await;
    must_append(client, 4, 16, CommandBody::SetPresence { online: false, connection: 7 }).await;
    // The social views: a phone the contact index can hash, contacts, a
    // profile, a block, a status and its viewer.
    let register = CommandBody::RegisterDevice {
        phone: "+15550004321".into(),
        device: DeviceId(1),
        identity_key: vec![1],
        name: "phone".into(),
        token_hash: [8; 32],
        pin_hash: None,
    };
    must_append(client, 5, 1, register).await;
    must_append(client, 5, 2, CommandBody::UpdateContacts { contacts: vec![UserId(4)] }).await;
    must_append(client, 5, 3, CommandBody::UpdateProfile { name: "e".into(), about: "x".into(), avatar: None }).await;
    must_append(client, 5, 4, CommandBody::Block { target: UserId(1) }).await;
    let post = CommandBody::PostStatus {
        status_id: 1,
        ciphertext: b"s".to_vec(),
        media: None,
        acl: vec![],
        audience: chorus_schema::StatusAudience::Contacts,
        ttl_ms: 0,
    };
    must_append(client, 5, 5, post).await;
    must_append(client, 4, 20, CommandBody::ViewStatus { author: UserId(5), status_id: 1 }).await;
    // The key directory (issue 14): keys and a fallback key uploaded, one claimed.
    let prekey = |id: u32| chorus_schema::Prekey { id, key: vec![id as u8; 32] };
    let upload = CommandBody::UploadDeviceKeys {
        prekeys: vec![prekey(1), prekey(2)],
        fallback_key: Some(prekey(100)),
        fallback_signature: vec![7; 64],
    };
    must_append(client, 4, 21, upload).await;
    must_append(client, 5, 6, CommandBody::ClaimDeviceKeys { target: UserId(4) }).await;
    // Media (issue 14): an upload, and a message referencing it.
    must_append(client, 4, 21, CommandBody::RecordMedia { blake3: [7; 32], size: 10 }).await;
    let media = Some(MediaRef { blake3: [7; 32], size: 10, mime: "image/jpeg".into() });
    must_append(client, 4, 22, CommandBody::SendDirect { recipient: UserId(5), ciphertext: vec![1], media }).await;
}

#[test]
fn replay_of_every_view_equals_the_live_projector_and_reports_a_changed_key() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::must_start(&dir.path().join("dev"));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let client =
            LogClient::connect(std::slice::from_ref(&dev.client_addr), &dev.tls("edge"), ClientConfig::default())
                .await
                .expect("connect to chorus dev");
        workload(&client).await;
        // Named consumers' commits (issue 13) are events too: every view ignores them.
        let operator =
            LogClient::connect(std::slice::from_ref(&dev.client_addr), &dev.tls("operator"), ClientConfig::default())
                .await
                .expect("connect to chorus dev as the operator");
        let at = |p: u16, o: u64| {
            chorus_schema::PartitionOffset::new(chorus_schema::PartitionId(p), chorus_schema::Offset(o))
        };
        operator.commit_offsets("replay", &[at(0, 1), at(1, 2)]).await.expect("commit");
        operator.commit_offsets("replay", &[at(1, 3)]).await.expect("commit");
    });

    // The live projector catches up on its own: until then the stores are at
    // different offsets, which `--compare` reports as not comparable.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut attempt = 0;
    let all = loop {
        attempt += 1;
        let out = dir.path().join(format!("all-{attempt}"));
        let o = dev.replay("all", &out, Some(&dev.live_store()));
        if o.status.success() {
            assert!(text(&o.stdout).contains("equal"), "{}", text(&o.stdout));
            break out;
        }
        let err = text(&o.stderr);
        assert!(err.contains("not comparable"), "replay --view all failed: {err}");
        assert!(Instant::now() < deadline, "the projector never caught up: {err}");
        std::thread::sleep(Duration::from_millis(200));
    };

    // Each view alone equals the live one.
    for view in [
        "roster",
        "cursors",
        "chat_list",
        "receipt_status",
        "inbox",
        "directory",
        "receipt_log",
        "presence",
        "privacy",
        "contacts",
        "profile",
        "status",
        "contact_index",
        "media",
    ] {
        let o = dev.replay(view, &dir.path().join(view), Some(&dev.live_store()));
        assert!(o.status.success(), "{view}: {}{}", text(&o.stdout), text(&o.stderr));
        let stdout = text(&o.stdout);
        assert!(stdout.contains(&format!("rebuilt {view} from")) && stdout.contains("equal"), "{view}: {stdout}");
        assert!(!stdout.contains(": 0 keys"), "{view} is empty: {stdout}");
    }
    let o = dev.replay("inboxes", &dir.path().join("bad-name"), None);
    assert!(!o.status.success() && text(&o.stderr).contains("no view is named"), "{}", text(&o.stderr));

    // The directory's device names are in the compared stores (one live
    // companion of user 4, the unlinked one gone).
    {
        let store = RocksStore::open(&all).unwrap();
        let of_user_4 = |k: &[u8]| k.get(1..9) == Some(&4u64.to_be_bytes()[..]);
        let names =
            store.entries().unwrap().into_iter().filter(|(k, _)| k[0] == keys::DEVICE_INFO && of_user_4(k)).count();
        assert_eq!(names, 2, "the primary and the paired companion of user 4");
    }

    // A store equal to the live one but for one inbox item: the replay of the
    // inbox names that key and fails; the replay of the directory does not see it.
    let tampered = {
        let store = RocksStore::open(&all).unwrap();
        let (key, mut value) = store.entries().unwrap().into_iter().find(|(k, _)| k[0] == keys::INBOX).unwrap();
        value[0] ^= 0xff;
        let mut txn = store.begin();
        txn.put(&key, &value);
        txn.commit().unwrap();
        key
    };
    let o = dev.replay("inbox", &dir.path().join("inbox-again"), Some(&all));
    assert!(!o.status.success());
    let stdout = text(&o.stdout);
    assert!(stdout.contains(&format!("first difference: view inbox: key {}", keys::display(&tampered))), "{stdout}");
    let o = dev.replay("directory", &dir.path().join("directory-again"), Some(&all));
    assert!(o.status.success(), "{}", text(&o.stderr));
}
