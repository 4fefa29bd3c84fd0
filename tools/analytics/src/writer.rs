//! Part files: [`PartWriter`] writes rows as JSON lines or Parquet to a
//! temporary name and, on [`PartWriter::commit`], makes the file durable and
//! gives it its final name (fsync file, rename, fsync directory).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, StringBuilder, UInt16Builder, UInt32Builder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::{Error, Result, Row};

/// The file format of an export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Parquet,
    Jsonl,
}

impl Format {
    /// The file name extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Jsonl => "jsonl",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = Error;

    fn from_str(s: &str) -> Result<Format> {
        match s {
            "parquet" => Ok(Format::Parquet),
            "jsonl" => Ok(Format::Jsonl),
            other => Err(Error::BadFormat(other.to_owned())),
        }
    }
}

/// The Arrow schema of [`Row`] (the Parquet files' columns), in `Row`'s field
/// order. Everything but `partition`, `offset` and `kind` is nullable.
pub fn schema() -> SchemaRef {
    use DataType::*;
    let f = |name: &str, t: DataType, nullable: bool| Field::new(name, t, nullable);
    Arc::new(Schema::new(vec![
        f("partition", UInt16, false),
        f("offset", UInt64, false),
        f("log_index", UInt64, true),
        f("at_ms", UInt64, true),
        f("kind", Utf8, false),
        f("chat", Utf8, true),
        f("seq", UInt64, true),
        f("target_seq", UInt64, true),
        f("sender_user", UInt64, true),
        f("sender_device", UInt64, true),
        f("user", UInt64, true),
        f("device", UInt64, true),
        f("other_user", UInt64, true),
        f("members", UInt32, true),
        f("recipients", UInt32, true),
        f("ciphertext_bytes", UInt32, true),
        f("media_bytes", UInt64, true),
        f("receipt", Utf8, true),
        f("up_to_seq", UInt64, true),
        f("group_op", Utf8, true),
        f("online", Boolean, true),
        f("device_online", Boolean, true),
        f("blocked", Boolean, true),
        f("items", UInt32, true),
        f("status_id", UInt64, true),
        f("expires_at_ms", UInt64, true),
        f("phone", Utf8, true),
    ]))
}

/// Column builders for [`schema`], reused from batch to batch.
#[derive(Debug, Default)]
struct Columns {
    partition: UInt16Builder,
    offset: UInt64Builder,
    log_index: UInt64Builder,
    at_ms: UInt64Builder,
    kind: StringBuilder,
    chat: StringBuilder,
    seq: UInt64Builder,
    target_seq: UInt64Builder,
    sender_user: UInt64Builder,
    sender_device: UInt64Builder,
    user: UInt64Builder,
    device: UInt64Builder,
    other_user: UInt64Builder,
    members: UInt32Builder,
    recipients: UInt32Builder,
    ciphertext_bytes: UInt32Builder,
    media_bytes: UInt64Builder,
    receipt: StringBuilder,
    up_to_seq: UInt64Builder,
    group_op: StringBuilder,
    online: BooleanBuilder,
    device_online: BooleanBuilder,
    blocked: BooleanBuilder,
    items: UInt32Builder,
    status_id: UInt64Builder,
    expires_at_ms: UInt64Builder,
    phone: StringBuilder,
    len: usize,
}

impl Columns {
    fn append(&mut self, r: &Row) {
        self.partition.append_value(r.partition);
        self.offset.append_value(r.offset);
        self.log_index.append_option(r.log_index);
        self.at_ms.append_option(r.at_ms);
        self.kind.append_value(r.kind);
        match r.chat {
            Some(c) => {
                let h = c.hex();
                match std::str::from_utf8(&h) {
                    Ok(s) => self.chat.append_value(s),
                    Err(_) => self.chat.append_null(),
                }
            }
            None => self.chat.append_null(),
        }
        self.seq.append_option(r.seq);
        self.target_seq.append_option(r.target_seq);
        self.sender_user.append_option(r.sender_user);
        self.sender_device.append_option(r.sender_device);
        self.user.append_option(r.user);
        self.device.append_option(r.device);
        self.other_user.append_option(r.other_user);
        self.members.append_option(r.members);
        self.recipients.append_option(r.recipients);
        self.ciphertext_bytes.append_option(r.ciphertext_bytes);
        self.media_bytes.append_option(r.media_bytes);
        self.receipt.append_option(r.receipt);
        self.up_to_seq.append_option(r.up_to_seq);
        self.group_op.append_option(r.group_op);
        self.online.append_option(r.online);
        self.device_online.append_option(r.device_online);
        self.blocked.append_option(r.blocked);
        self.items.append_option(r.items);
        self.status_id.append_option(r.status_id);
        self.expires_at_ms.append_option(r.expires_at_ms);
        self.phone.append_option(r.phone.as_deref());
        self.len += 1;
    }

    /// The rows appended since the last call, as a batch; the builders start over.
    fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        self.len = 0;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.log_index.finish()),
            Arc::new(self.at_ms.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.chat.finish()),
            Arc::new(self.seq.finish()),
            Arc::new(self.target_seq.finish()),
            Arc::new(self.sender_user.finish()),
            Arc::new(self.sender_device.finish()),
            Arc::new(self.user.finish()),
            Arc::new(self.device.finish()),
            Arc::new(self.other_user.finish()),
            Arc::new(self.members.finish()),
            Arc::new(self.recipients.finish()),
            Arc::new(self.ciphertext_bytes.finish()),
            Arc::new(self.media_bytes.finish()),
            Arc::new(self.receipt.finish()),
            Arc::new(self.up_to_seq.finish()),
            Arc::new(self.group_op.finish()),
            Arc::new(self.online.finish()),
            Arc::new(self.device_online.finish()),
            Arc::new(self.blocked.finish()),
            Arc::new(self.items.finish()),
            Arc::new(self.status_id.finish()),
            Arc::new(self.expires_at_ms.finish()),
            Arc::new(self.phone.finish()),
        ];
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

/// Rows buffered per Arrow batch before they go to the Parquet writer (which
/// cuts row groups at `row_group_rows` regardless).
const BATCH_ROWS: usize = 8192;

enum Sink {
    Jsonl(BufWriter<File>),
    Parquet { writer: Box<ArrowWriter<BufWriter<File>>>, columns: Box<Columns>, schema: SchemaRef },
}

/// One part file being written: rows go to `<dir>/.<name>.tmp` until
/// [`PartWriter::commit`] renames it to `<dir>/<name>`. Dropping it
/// uncommitted leaves the temporary file, which [`crate::Exporter`] removes
/// when it next opens the directory.
pub struct PartWriter {
    sink: Sink,
    tmp: PathBuf,
    path: PathBuf,
    rows: u64,
}

impl std::fmt::Debug for PartWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartWriter").field("path", &self.path).field("rows", &self.rows).finish()
    }
}

/// The temporary name of `name` while it is written.
pub(crate) fn tmp_name(name: &str) -> String {
    format!(".{name}.tmp")
}

impl PartWriter {
    /// Creates the temporary file of part `name` in `dir`. Parquet files cut
    /// a row group every `row_group_rows` rows (Snappy-compressed pages).
    ///
    /// # Errors
    /// On IO failure.
    pub fn create(dir: &Path, name: &str, format: Format, row_group_rows: usize) -> Result<PartWriter> {
        let tmp = dir.join(tmp_name(name));
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let out = BufWriter::with_capacity(1 << 20, file);
        let sink = match format {
            Format::Jsonl => Sink::Jsonl(out),
            Format::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_max_row_group_row_count(Some(row_group_rows.max(1)))
                    .build();
                let schema = schema();
                let writer = ArrowWriter::try_new(out, schema.clone(), Some(props))?;
                Sink::Parquet { writer: Box::new(writer), columns: Box::default(), schema }
            }
        };
        Ok(PartWriter { sink, tmp, path: dir.join(name), rows: 0 })
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Appends one row.
    ///
    /// # Errors
    /// On IO or encoding failure.
    pub fn write(&mut self, row: &Row) -> Result<()> {
        self.rows += 1;
        match &mut self.sink {
            Sink::Jsonl(out) => {
                serde_json::to_writer(&mut *out, row)?;
                out.write_all(b"\n").map_err(|e| Error::io(&self.tmp, e))
            }
            Sink::Parquet { writer, columns, schema } => {
                columns.append(row);
                if columns.len >= BATCH_ROWS {
                    writer.write(&columns.finish(schema)?)?;
                }
                Ok(())
            }
        }
    }

    /// Finishes the file, fsyncs it, renames it to its final name and fsyncs
    /// the directory: from then on the part survives a crash whole, and until
    /// then only the temporary name exists. Returns the final path.
    ///
    /// # Errors
    /// On IO or encoding failure (the temporary file stays).
    pub fn commit(self) -> Result<PathBuf> {
        let PartWriter { sink, tmp, path, .. } = self;
        let io = |e| Error::io(&tmp, e);
        match sink {
            Sink::Jsonl(mut out) => {
                out.flush().map_err(io)?;
                out.get_ref().sync_all().map_err(io)?;
            }
            Sink::Parquet { mut writer, mut columns, schema } => {
                if columns.len > 0 {
                    writer.write(&columns.finish(&schema)?)?;
                }
                writer.finish()?;
                let out = writer.inner_mut();
                out.flush().map_err(io)?;
                out.get_ref().sync_all().map_err(io)?;
            }
        }
        std::fs::rename(&tmp, &path).map_err(io)?;
        sync_dir(&path)?;
        Ok(path)
    }
}

/// Fsyncs the directory holding `path`, so a rename into it is durable.
pub(crate) fn sync_dir(path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))
}
