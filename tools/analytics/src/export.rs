//! [`Exporter`]: a directory of part files and the [`Manifest`] that says
//! which parts are complete and where each partition's export ended.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chorus_schema::{Offset, PartitionId};
use serde::{Deserialize, Serialize};

use crate::writer::{sync_dir, tmp_name, Format, PartWriter};
use chorus_schema::EventRecord;

use crate::{Error, Pseudonymizer, Result, Row, RowBuilder};

/// The manifest's file name inside the export directory.
pub const MANIFEST: &str = "manifest.json";

/// What an export directory holds, written atomically after each part file
/// is complete: a part appears here only once its file has its final name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Layout version (1).
    pub version: u32,
    pub format: Format,
    /// [`crate::Pseudonymizer::key_id`] of the key the export used, if any.
    pub pseudonym_key_id: Option<String>,
    /// The partitions the export covers (a resumed export continues all of
    /// them, also those it had not reached when it stopped).
    pub partitions: Vec<u16>,
    /// Per partition, the offset after the exported range: a resumed export
    /// starts there.
    pub next_offsets: BTreeMap<u16, u64>,
    /// The complete part files, in the order they were written.
    pub parts: Vec<Part>,
    /// How many times the manifest was saved (names the groups file).
    #[serde(default)]
    pub saves: u64,
    /// The file (in the export directory) holding the row builder's group
    /// membership folded up to `next_offsets`, so that a resumed export needs
    /// no warm-up read of the partitions' earlier records.
    #[serde(default)]
    pub groups_file: Option<String>,
}

/// One complete part file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// The file's name in the export directory.
    pub file: String,
    pub rows: u64,
    /// The offsets of the rows it holds, per partition.
    pub ranges: Vec<PartRange>,
}

/// The rows of one partition in one part: offsets `from_offset..to_offset`
/// (the last row's offset plus one; rows outside a time range are skipped,
/// so not every offset in between need have a row).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRange {
    pub partition: u16,
    pub from_offset: u64,
    pub to_offset: u64,
}

impl Manifest {
    fn new(format: Format, pseudonym_key_id: Option<String>, partitions: Vec<u16>) -> Manifest {
        Manifest {
            version: 1,
            format,
            pseudonym_key_id,
            partitions,
            next_offsets: BTreeMap::new(),
            parts: Vec::new(),
            saves: 0,
            groups_file: None,
        }
    }

    /// Reads `dir`'s manifest; `None` if there is none.
    ///
    /// # Errors
    /// On IO failure or a manifest that does not parse.
    pub fn load(dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(MANIFEST);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(
                serde_json::from_slice(&bytes).map_err(|e| Error::BadManifest { path, reason: e.to_string() })?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// Writes the manifest to a temporary name, fsyncs it, renames it over
    /// the old one and fsyncs the directory: a crash leaves the old manifest
    /// or the new one, never a mix.
    fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST);
        let tmp = dir.join(tmp_name(MANIFEST));
        let io = |e| Error::io(&tmp, e);
        let bytes = serde_json::to_vec_pretty(self)?;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &path).map_err(io)?;
        sync_dir(&path)
    }

    /// Where a resumed export of `partition` starts.
    pub fn next_offset(&self, partition: PartitionId) -> Option<Offset> {
        self.next_offsets.get(&partition.0).map(|o| Offset(*o))
    }
}

/// How an [`Exporter`] writes.
#[derive(Clone, Debug)]
pub struct Options {
    pub format: Format,
    /// Rows per Parquet row group (scans read row groups; 128k rows is a good size).
    pub row_group_rows: usize,
    /// Rows per part file: a part is committed, and the manifest advanced,
    /// every this many rows (and at the end).
    pub part_rows: u64,
    /// Pseudonymize ids with this (its key id goes into the manifest).
    pub pseudonymizer: Option<Pseudonymizer>,
}

impl Options {
    fn key_id(&self) -> Option<String> {
        self.pseudonymizer.as_ref().map(Pseudonymizer::key_id)
    }
}

impl Default for Options {
    fn default() -> Options {
        Options { format: Format::Parquet, row_group_rows: 128 * 1024, part_rows: 4 * 1024 * 1024, pseudonymizer: None }
    }
}

/// What an export wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub rows: u64,
    /// The part files committed by this export.
    pub files: Vec<PathBuf>,
}

struct OpenPart {
    writer: PartWriter,
    name: String,
    ranges: BTreeMap<u16, (u64, u64)>,
}

/// Writes rows into an export directory:
///
/// ```text
/// DIR/part-00001.parquet   complete parts (or .jsonl), numbered in order
/// DIR/part-00002.parquet
/// DIR/.part-00003.parquet.tmp   the part being written (never read it)
/// DIR/manifest.json        the complete parts and each partition's next offset
/// DIR/groups-000007.json   group membership folded up to those offsets (the
///                          manifest names it; a resume starts from it)
/// ```
///
/// A part is written under its temporary name, then fsynced and renamed;
/// only after that is the manifest replaced (atomically) by one that lists it
/// and advances the partitions' next offsets past its rows. So after a crash
/// at any instant the manifest names only whole parts, and every row of a
/// listed part is below the next offsets. [`Exporter::resume`] removes what a
/// crash left behind (temporary files, and a part renamed but not yet in the
/// manifest) and continues from the next offsets: no gap, no duplicate.
///
/// Readers should take the parts the manifest lists (after a completed
/// export or a resume, these are exactly the `part-*` files).
///
/// Rows of each partition must come in increasing offset order, starting at
/// or after the manifest's next offset; partitions may interleave.
pub struct Exporter {
    dir: PathBuf,
    options: Options,
    manifest: Manifest,
    part: Option<OpenPart>,
    /// Next offsets reached since the manifest was last saved.
    pending: BTreeMap<u16, u64>,
    summary: Summary,
    builder: RowBuilder,
    /// The builder starts from the manifest's groups file (no warm-up needed).
    restored: bool,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").field("dir", &self.dir).field("manifest", &self.manifest).finish()
    }
}

impl Exporter {
    /// Starts a new export of `partitions` in `dir` (created if missing),
    /// and saves its first manifest (no parts yet).
    ///
    /// # Errors
    /// [`Error::ManifestExists`] if `dir` holds an export already; IO failure.
    pub fn create(dir: &Path, options: Options, partitions: &[PartitionId]) -> Result<Exporter> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        if Manifest::load(dir)?.is_some() {
            return Err(Error::ManifestExists(dir.join(MANIFEST)));
        }
        let partitions = partitions.iter().map(|p| p.0).collect();
        let manifest = Manifest::new(options.format, options.key_id(), partitions);
        let mut exporter = Exporter::open(dir, options, manifest);
        exporter.clean()?;
        exporter.save_manifest()?;
        Ok(exporter)
    }

    /// Continues the export in `dir` from its manifest, after removing what
    /// an interrupted export left (temporary files, parts not in the manifest).
    ///
    /// # Errors
    /// [`Error::NoManifest`]; [`Error::Mismatch`] if `options` differ from the
    /// manifest's format or pseudonym key; IO failure.
    pub fn resume(dir: &Path, options: Options) -> Result<Exporter> {
        let manifest = Manifest::load(dir)?.ok_or_else(|| Error::NoManifest(dir.join(MANIFEST)))?;
        if manifest.format != options.format {
            return Err(Error::Mismatch(format!(
                "the export is {}, not {}",
                manifest.format.extension(),
                options.format.extension()
            )));
        }
        if manifest.pseudonym_key_id != options.key_id() {
            return Err(Error::Mismatch("the pseudonym key differs from the export's".into()));
        }
        let mut exporter = Exporter::open(dir, options, manifest);
        exporter.clean()?;
        if let Some(file) = exporter.manifest.groups_file.clone() {
            let path = dir.join(&file);
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            let bad = |reason: String| Error::BadManifest { path: path.clone(), reason };
            let snapshot = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
            exporter.builder.restore_groups(&snapshot).map_err(|e| bad(e.to_string()))?;
            exporter.restored = true;
        }
        Ok(exporter)
    }

    fn open(dir: &Path, options: Options, manifest: Manifest) -> Exporter {
        Exporter {
            dir: dir.to_owned(),
            builder: RowBuilder::new(options.pseudonymizer.clone()),
            restored: false,
            options,
            manifest,
            part: None,
            pending: BTreeMap::new(),
            summary: Summary::default(),
        }
    }

    /// Removes temporary files and part files the manifest does not list.
    fn clean(&mut self) -> Result<()> {
        let listed: std::collections::HashSet<&str> = self.manifest.parts.iter().map(|p| p.file.as_str()).collect();
        let entries = std::fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&self.dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let stale = (name.starts_with('.') && name.ends_with(".tmp"))
                || (name.starts_with("part-") && !listed.contains(name))
                || (name.starts_with("groups-") && self.manifest.groups_file.as_deref() != Some(name));
            if stale {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
        Ok(())
    }

    /// The manifest as last saved.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Where `partition`'s rows continue: the manifest's next offset (or
    /// what this export reached since).
    pub fn next_offset(&self, partition: PartitionId) -> Option<Offset> {
        self.pending.get(&partition.0).or_else(|| self.manifest.next_offsets.get(&partition.0)).map(|o| Offset(*o))
    }

    /// Whether `partition`'s rows continue from a saved group membership:
    /// then the records before [`Exporter::next_offset`] need not be read
    /// (no warm-up). False for a new export and for partitions the saved
    /// export had not reached.
    pub fn warm(&self, partition: PartitionId) -> bool {
        self.restored && self.manifest.next_offsets.contains_key(&partition.0)
    }

    /// Folds a record before the range into the row builder (warm-up).
    pub fn observe(&mut self, record: &EventRecord) {
        self.builder.observe(record);
    }

    /// Exports one record: its row (see [`RowBuilder::row`]) is written.
    ///
    /// # Errors
    /// As [`Exporter::write`]; the builder is left untouched by an overlap.
    pub fn export(&mut self, record: &EventRecord) -> Result<()> {
        self.check(record.partition.0, record.offset.0)?;
        let row = self.builder.row(record);
        self.write(&row)
    }

    fn check(&self, partition: u16, offset: u64) -> Result<()> {
        match self.next_offset(PartitionId(partition)) {
            Some(next) if offset < next.0 => Err(Error::Overlap { partition, offset, next: next.0 }),
            _ => Ok(()),
        }
    }

    /// Writes one row; commits the part when it reaches `part_rows`.
    ///
    /// # Errors
    /// [`Error::Overlap`] if the row is not after the partition's last
    /// exported offset (it would be a duplicate); IO or encoding failure.
    pub fn write(&mut self, row: &Row) -> Result<()> {
        let p = row.partition;
        self.check(p, row.offset)?;
        if self.part.is_none() {
            let name = format!("part-{:05}.{}", self.manifest.parts.len() + 1, self.options.format.extension());
            let writer = PartWriter::create(&self.dir, &name, self.options.format, self.options.row_group_rows)?;
            self.part = Some(OpenPart { writer, name, ranges: BTreeMap::new() });
        }
        let Some(part) = self.part.as_mut() else { return Ok(()) };
        part.writer.write(row)?;
        part.ranges
            .entry(p)
            .and_modify(|r| r.1 = row.offset.saturating_add(1))
            .or_insert((row.offset, row.offset.saturating_add(1)));
        self.pending.insert(p, row.offset.saturating_add(1));
        self.summary.rows += 1;
        if part.writer.rows() >= self.options.part_rows {
            self.commit_part()?;
        }
        Ok(())
    }

    /// Records that `partition` was exported up to `next` (exclusive) even
    /// where no rows were written (the end of its range, or records skipped
    /// by a time bound). It becomes durable with the next manifest save.
    pub fn covered(&mut self, partition: PartitionId, next: Offset) {
        let cur = self.next_offset(partition).map_or(0, |o| o.0);
        self.pending.insert(partition.0, cur.max(next.0));
    }

    fn commit_part(&mut self) -> Result<()> {
        if let Some(part) = self.part.take() {
            let rows = part.writer.rows();
            let path = part.writer.commit()?;
            self.manifest.parts.push(Part {
                file: part.name,
                rows,
                ranges: part
                    .ranges
                    .into_iter()
                    .map(|(partition, (from_offset, to_offset))| PartRange { partition, from_offset, to_offset })
                    .collect(),
            });
            self.summary.files.push(path);
        }
        self.save_manifest()
    }

    /// Saves the group membership under a new name, then the manifest that
    /// names it (atomically), then removes the previous groups file: a crash
    /// leaves the old manifest with its own groups file, or the new pair.
    fn save_manifest(&mut self) -> Result<()> {
        let mut next = self.manifest.clone();
        for (p, o) in &self.pending {
            let e = next.next_offsets.entry(*p).or_insert(0);
            *e = (*e).max(*o);
        }
        next.saves += 1;
        let groups = format!("groups-{:06}.json", next.saves);
        let path = self.dir.join(&groups);
        let tmp = self.dir.join(tmp_name(&groups));
        let io = |e| Error::io(&tmp, e);
        {
            use std::io::Write;
            let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
            serde_json::to_writer(&mut f, &self.builder.groups_snapshot())?;
            f.flush().map_err(io)?;
            f.get_ref().sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &path).map_err(io)?;
        next.groups_file = Some(groups);
        next.save(&self.dir)?;
        if let Some(old) = self.manifest.groups_file.take() {
            // The new manifest no longer names it; a leftover is removed by `clean`.
            let _ = std::fs::remove_file(self.dir.join(old));
        }
        self.manifest = next;
        self.pending.clear();
        Ok(())
    }

    /// Commits the open part (if it has rows) and saves the manifest.
    ///
    /// # Errors
    /// On IO or encoding failure.
    pub fn finish(mut self) -> Result<Summary> {
        self.commit_part()?;
        Ok(std::mem::take(&mut self.summary))
    }
}
