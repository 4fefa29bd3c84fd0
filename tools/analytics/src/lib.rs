//! chorus for analysts: the log's events as metadata-only rows.
//!
//! This crate is the one place that maps events to analyst rows. `chorus
//! export` writes them to Parquet or JSON lines files; `chorus tail --json`
//! prints the same [`Row`]s (serde), so a column means the same everywhere.
//!
//! What it leaves out, always: ciphertext and plaintext, keys, token and PIN
//! hashes, and the text people write (names, about texts, group names and
//! descriptions, reactions). A row says who sent what kind of thing to how
//! many, when and how big — not what. See [`Row`] for every column.
//!
//! Modules:
//! - [`row`]: [`Row`], [`RowBuilder`] (events → rows; folds group membership
//!   for member counts; needs warming with the records before a range).
//! - [`pseudonym`]: [`Pseudonymizer`], keyed BLAKE3 pseudonyms of user ids,
//!   devices, chats and phone numbers (`--pseudonymize KEY`).
//! - [`writer`]: [`PartWriter`], one Parquet or JSON lines file, written to a
//!   temporary name and renamed when complete.
//! - [`export`]: [`Exporter`] and its [`Manifest`]: a directory of part
//!   files that a later export resumes with no gap and no duplicate.
//!
//! ```text
//! EventRecord ──RowBuilder(+Pseudonymizer)──► Row ──Exporter──► DIR/.part-N.tmp
//!                                                     │ commit: fsync, rename, fsync dir
//!                                                     ▼
//!                                   DIR/part-N.parquet, then DIR/manifest.json (atomic)
//! ```
//!
//! A record that does not decode (an event kind newer than this build, or a
//! damaged record) becomes a row of kind [`UNKNOWN_KIND`] with only its
//! partition and offset, so offsets stay gap-free and nothing is guessed.

pub mod export;
pub mod pseudonym;
pub mod row;
pub mod writer;

pub use export::{Exporter, Manifest, Options, Part, PartRange, Summary, MANIFEST};
pub use pseudonym::Pseudonymizer;
pub use row::{kind_name, ChatKey, Row, RowBuilder, UNKNOWN_KIND};
pub use writer::{schema, Format, PartWriter};

use std::path::{Path, PathBuf};

/// What can go wrong writing an export.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unknown format {0:?} (parquet or jsonl)")]
    BadFormat(String),
    #[error("{path}: not a manifest: {reason}")]
    BadManifest { path: PathBuf, reason: String },
    #[error("{0} exists: this directory holds an export (resume it with --from-manifest, or pick another)")]
    ManifestExists(PathBuf),
    #[error("{0} is missing: nothing to resume")]
    NoManifest(PathBuf),
    #[error("cannot resume: {0}")]
    Mismatch(String),
    #[error("partition {partition} offset {offset} is already exported (next is {next})")]
    Overlap { partition: u16, offset: u64, next: u64 },
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io { path: path.to_owned(), source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
