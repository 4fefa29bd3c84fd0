//! Sans-IO per-connection protocol state (quinn-proto style).
//!
//! A [`Session`] is driven by the connection's task: each decoded client frame goes
//! to [`Session::handle_frame`] (or the bytes to [`Session::handle_bytes`]); each IO
//! result comes back through a `handle_*` method; after every call the driver drains
//! [`Session::poll_action`] and performs the [`Action`]s in order. No clock (time is
//! the `now_ms` argument), no randomness but the injected [`Entropy`], no IO.
//!
//! # Module map
//! - `core`: [`Session`], [`Action`], [`Correlation`], the flows.
//! - `config`: [`Config`].
//! - `otp`: [`OtpRegistry`], one per edge, shared by its sessions.
//! - `rate`: [`TokenBucket`].
//! - `limits`: [`Limits`], the edge-wide rate limits (governor) of logins and codes.
//! - `pin`: [`pin_hash`], the slow hash of registration PINs.
//! - `item`: [`Item`], a timeline item with its frame, shared by the connections.
//! - `timeline`: the per-connection delivery order (dedup, gap fill, sync).
//! - `entropy`: [`Entropy`], [`SeededEntropy`].

mod config;
mod core;
mod entropy;
mod item;
mod limits;
mod otp;
mod pin;
mod rate;
mod timeline;

pub use self::core::{
    token_expiry_ms, token_hash, token_linked_ms, Action, AppendError, ClaimError, ClaimId, Correlation, Identity,
    InfoAnswer, InfoRequest, RecipientVerdict, Session, TokenVerdict,
};
pub use config::Config;
pub use entropy::{Entropy, SeededEntropy};
pub use item::Item;
pub use limits::{Limits, LimitsConfig, Rate, Refused};
pub use otp::{OtpConfig, OtpError, OtpRegistry};
pub use pin::pin_hash;
pub use rate::TokenBucket;
