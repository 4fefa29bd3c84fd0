//! The chorus edge: where clients connect.
//!
//! # What it does (so far)
//! - [`session`]: the sans-IO core of one client connection — authentication
//!   (OTP registration, token login), sends, acks, sync requests, deliveries —
//!   as a synchronous state machine: frames and IO results in (`handle_*`),
//!   [`session::Action`]s out ([`session::Session::poll_action`]).
//!
//! # What it leaves out (next)
//! - The quinn driver (`driver.rs`): accepts connections with ALPN
//!   [`chorus_schema::edge::ALPN`], splits the control stream into frames
//!   ([`chorus_schema::edge::FrameReader`]), runs the actions (log appends, SMS,
//!   view queries, bus subscriptions) and feeds their results back.
//! - The client SDK. Wire types live in [`chorus_schema::edge`].
//!
//! # Dataflow
//! ```text
//!  client ──ClientFrame──▶ driver ──handle_frame──▶ Session ──poll_action──▶ Action
//!     ▲                      │  ▲                                              │
//!     │                      │  └── handle_append_result / handle_token_verified ◀─ log, views
//!     └──── ServerFrame ◀────┴──────────────── Action::Send / Action::Deliver ◀┘
//! ```

pub mod session;
