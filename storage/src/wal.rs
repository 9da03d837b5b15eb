//! Write-ahead log: every accepted batch is appended here before it is acknowledged.
//!
//! The log is a directory of files named by the sequence number of their first record. A
//! record is `len: u32 | crc32: u32 | seq: u64 | payload` (little endian), where the payload
//! is one batch as an Arrow IPC stream and the CRC covers `seq` and the payload. Replay stops
//! at the first torn or corrupt record of the last file and cuts the file there: such a record
//! was never acknowledged, because acknowledgement waits for the write (and the fsync).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use arrow::buffer::Buffer;
use arrow::ipc::reader::StreamDecoder;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

use crate::error::{Result, StoreError};

const HEADER_LEN: usize = 4 + 4 + 8;
/// A file is closed and a new one started once it passes this size.
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Refuse to believe a record length above this: it can only be corruption.
const MAX_RECORD_BYTES: usize = 1024 * 1024 * 1024;

/// Encodes a batch as the payload of one WAL record.
pub fn encode_batch(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut payload = Vec::with_capacity(batch.get_array_memory_size() / 2 + 4096);
    let mut writer = StreamWriter::try_new(&mut payload, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    // The payload becomes the hot batch's memory: it keeps no spare capacity.
    payload.shrink_to_fit();
    Ok(payload)
}

/// Decodes a WAL record's payload into a batch whose buffers are slices of the payload
/// itself (a buffer not aligned for its type is copied): a hot batch and its record share one
/// exact-size allocation, with none of a builder's spare capacity.
pub fn decode_batch(mut payload: Buffer) -> Result<RecordBatch> {
    let mut decoder = StreamDecoder::new();
    let mut batches = Vec::with_capacity(1);
    while !payload.is_empty() {
        if let Some(batch) = decoder.decode(&mut payload)? {
            batches.push(batch);
        }
    }
    decoder.finish()?;
    match (batches.pop(), batches.is_empty()) {
        (Some(batch), true) => Ok(batch),
        _ => Err(StoreError::Corrupt(
            "WAL record does not hold exactly one batch".into(),
        )),
    }
}

#[derive(Debug)]
struct WalFile {
    first_seq: u64,
    path: PathBuf,
}

/// The open log. One writer appends; the flusher removes what segments now hold.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    /// Closed files, oldest first.
    closed: Vec<WalFile>,
    current: Option<(WalFile, File, u64)>,
    last_seq: u64,
    buffer: Vec<u8>,
}

/// A batch found by replay.
#[derive(Debug)]
pub struct Replayed {
    pub seq: u64,
    pub batch: RecordBatch,
    /// Size of its record: what it occupies in memory once decoded.
    pub bytes: usize,
}

/// What replay found: the batches after `skip_through`, and the highest sequence number seen.
#[derive(Debug)]
pub struct Replay {
    pub batches: Vec<Replayed>,
    pub last_seq: u64,
}

impl Wal {
    /// Opens the log in `dir` and replays every record with a sequence number above
    /// `skip_through` (those at or below it are already in segments).
    pub fn open(dir: &Path, skip_through: u64) -> Result<(Self, Replay)> {
        fs::create_dir_all(dir)?;
        let mut files = Vec::new();
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let first_seq = path
                .file_name()
                .and_then(|name| name.to_str())
                .and_then(|name| name.strip_suffix(".wal"))
                .and_then(|stem| stem.parse::<u64>().ok());
            if let Some(first_seq) = first_seq {
                files.push(WalFile { first_seq, path });
            }
        }
        files.sort_by_key(|file| file.first_seq);

        let mut replay = Replay {
            batches: Vec::new(),
            last_seq: skip_through,
        };
        let count = files.len();
        let mut kept = Vec::with_capacity(count);
        for (index, file) in files.into_iter().enumerate() {
            let bytes = fs::read(&file.path)?;
            let good_len = read_records(&bytes, skip_through, &mut replay)?;
            if good_len == 0 {
                // Created just before a crash, before its first record was whole. Its name
                // is the next record's: left here, it would be taken for the next file and
                // deleted with the closed ones under it.
                tracing::warn!(file = %file.path.display(), bytes = bytes.len(), "removing a WAL file without a whole record");
                fs::remove_file(&file.path)?;
                continue;
            }
            if good_len < bytes.len() {
                if index + 1 == count {
                    tracing::warn!(
                        file = %file.path.display(),
                        kept = good_len,
                        cut = bytes.len() - good_len,
                        "WAL ends in a torn record; cutting it off"
                    );
                    OpenOptions::new()
                        .write(true)
                        .open(&file.path)?
                        .set_len(good_len as u64)?;
                } else {
                    tracing::error!(
                        file = %file.path.display(),
                        offset = good_len,
                        "corrupt record in the middle of the WAL; the rest of this file is skipped"
                    );
                }
            }
            kept.push(file);
        }
        sync_dir(dir)?;
        let wal = Self {
            dir: dir.to_path_buf(),
            closed: kept,
            current: None,
            last_seq: replay.last_seq,
            buffer: Vec::new(),
        };
        Ok((wal, replay))
    }

    /// The sequence number of the last record written or replayed.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Appends records (sequence number, payload) in one write. Sequence numbers must grow.
    pub fn append<'a>(&mut self, records: impl IntoIterator<Item = (u64, &'a [u8])>) -> Result<()> {
        self.buffer.clear();
        let mut first = None;
        for (seq, payload) in records {
            debug_assert!(seq > self.last_seq);
            first.get_or_insert(seq);
            let mut crc = crc32fast::Hasher::new();
            crc.update(&seq.to_le_bytes());
            crc.update(payload);
            let len = u32::try_from(payload.len())
                .map_err(|_| StoreError::Corrupt("batch too large for one WAL record".into()))?;
            self.buffer.extend_from_slice(&len.to_le_bytes());
            self.buffer.extend_from_slice(&crc.finalize().to_le_bytes());
            self.buffer.extend_from_slice(&seq.to_le_bytes());
            self.buffer.extend_from_slice(payload);
            self.last_seq = seq;
        }
        let Some(first) = first else { return Ok(()) };
        if self
            .current
            .as_ref()
            .is_some_and(|(_, _, len)| *len >= MAX_FILE_BYTES)
        {
            self.close_current()?;
        }
        if self.current.is_none() {
            let path = self.dir.join(format!("{first:020}.wal"));
            // Never an existing file: appending to one would mix it up with a closed file.
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)?;
            sync_dir(&self.dir)?;
            self.current = Some((
                WalFile {
                    first_seq: first,
                    path,
                },
                file,
                0,
            ));
        }
        let (_, file, len) = self.current.as_mut().expect("opened above");
        if let Err(error) = file.write_all(&self.buffer) {
            // Part of a record may be on disk. Later records go to a new file, so replay,
            // which stops at the first bad record of a file, still reaches them.
            if let Some((file, _, _)) = self.current.take() {
                self.closed.push(file);
            }
            return Err(error.into());
        }
        *len += self.buffer.len() as u64;
        Ok(())
    }

    /// Makes everything appended so far durable.
    pub fn sync(&mut self) -> Result<()> {
        if let Some((_, file, _)) = &self.current {
            file.sync_data()?;
        }
        Ok(())
    }

    /// Deletes the files whose records all have sequence numbers at or below `seq`.
    pub fn remove_through(&mut self, seq: u64) -> Result<()> {
        if self.current.is_some() && self.last_seq <= seq {
            self.close_current()?;
        }
        let mut removed = false;
        while !self.closed.is_empty() {
            let last_in_file = match self.closed.get(1) {
                Some(next) => next.first_seq - 1,
                None if self.current.is_some() => {
                    self.current.as_ref().expect("checked").0.first_seq - 1
                }
                None => self.last_seq,
            };
            if last_in_file > seq {
                break;
            }
            let file = self.closed.remove(0);
            fs::remove_file(&file.path)?;
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn close_current(&mut self) -> Result<()> {
        if let Some((file, handle, _)) = self.current.take() {
            handle.sync_data()?;
            self.closed.push(file);
        }
        Ok(())
    }
}

/// Reads records from one file's bytes into `replay`; returns how many bytes were good.
fn read_records(bytes: &[u8], skip_through: u64, replay: &mut Replay) -> Result<usize> {
    let mut offset = 0;
    while bytes.len() - offset >= HEADER_LEN {
        let header = &bytes[offset..offset + HEADER_LEN];
        let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let seq = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        let start = offset + HEADER_LEN;
        if len > MAX_RECORD_BYTES || bytes.len() - start < len {
            break;
        }
        let payload = &bytes[start..start + len];
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&seq.to_le_bytes());
        hasher.update(payload);
        if hasher.finalize() != crc {
            break;
        }
        if seq > skip_through {
            replay.batches.push(Replayed {
                seq,
                batch: decode_batch(Buffer::from(payload))?,
                bytes: payload.len(),
            });
        }
        replay.last_seq = replay.last_seq.max(seq);
        offset = start + len;
    }
    Ok(offset)
}

/// Makes a file creation or removal in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(values: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))]).unwrap()
    }

    fn append(wal: &mut Wal, seq: u64, values: &[i64]) {
        let payload = encode_batch(&batch(values)).unwrap();
        wal.append([(seq, payload.as_slice())]).unwrap();
    }

    #[test]
    fn a_decoded_payload_is_the_batch_in_place() {
        let values: Vec<i64> = (0..1000).collect();
        let payload = Buffer::from_vec(encode_batch(&batch(&values)).unwrap());
        let decoded = decode_batch(payload.clone()).unwrap();
        assert_eq!(decoded, batch(&values));
        let data = decoded.column(0).to_data();
        let values_at = data.buffers()[0].as_ptr() as usize;
        let payload_at = payload.as_ptr() as usize;
        assert!(
            (payload_at..payload_at + payload.len()).contains(&values_at),
            "the values were copied out of the payload"
        );
        assert_eq!(payload.capacity(), payload.len());

        let mut two = Vec::new();
        let mut writer = StreamWriter::try_new(&mut two, &batch(&[1]).schema()).unwrap();
        writer.write(&batch(&[1])).unwrap();
        writer.write(&batch(&[2])).unwrap();
        writer.finish().unwrap();
        drop(writer);
        let refused = decode_batch(Buffer::from_vec(two)).unwrap_err();
        assert!(
            refused.to_string().contains("exactly one batch"),
            "{refused}"
        );
        assert!(decode_batch(Buffer::from(&b"not arrow"[..])).is_err());
    }

    #[test]
    fn replays_what_was_appended_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, replay) = Wal::open(dir.path(), 0).unwrap();
        assert!(replay.batches.is_empty());
        append(&mut wal, 1, &[1, 2]);
        append(&mut wal, 2, &[3]);
        append(&mut wal, 3, &[4, 5, 6]);
        wal.sync().unwrap();
        drop(wal);

        let (wal, replay) = Wal::open(dir.path(), 1).unwrap();
        let seqs: Vec<u64> = replay.batches.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![2, 3]);
        assert_eq!(replay.batches[1].batch, batch(&[4, 5, 6]));
        assert_eq!(wal.last_seq(), 3);
    }

    #[test]
    fn cuts_a_torn_tail_and_keeps_appending_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        append(&mut wal, 1, &[1]);
        append(&mut wal, 2, &[2]);
        drop(wal);
        let path = dir.path().join(format!("{:020}.wal", 1));
        let full = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(full - 3)
            .unwrap();

        let (mut wal, replay) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(replay.batches.len(), 1);
        assert_eq!(replay.last_seq, 1);
        append(&mut wal, 2, &[7]);
        drop(wal);
        let (_, replay) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(replay.batches[1].batch, batch(&[7]));
    }

    #[test]
    fn a_file_a_crash_left_without_a_record_is_not_taken_for_the_next_one() {
        // Created just before the crash: empty, or with part of its first record.
        for left in [&b""[..], &[7, 0, 0, 0, 1, 2][..]] {
            let dir = tempfile::tempdir().unwrap();
            let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
            append(&mut wal, 1, &[1]);
            append(&mut wal, 2, &[2]);
            wal.sync().unwrap();
            drop(wal);
            fs::write(dir.path().join(format!("{:020}.wal", 3)), left).unwrap();

            let (mut wal, replay) = Wal::open(dir.path(), 0).unwrap();
            assert_eq!(replay.last_seq, 2);
            append(&mut wal, 3, &[3]);
            wal.sync().unwrap();
            // Records 1 and 2 are in segments now; record 3 is not.
            wal.remove_through(2).unwrap();
            drop(wal);
            let (_, replay) = Wal::open(dir.path(), 2).unwrap();
            let seqs: Vec<u64> = replay.batches.iter().map(|r| r.seq).collect();
            assert_eq!(seqs, vec![3], "left {left:?}");
        }
    }

    #[test]
    fn flipped_byte_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        append(&mut wal, 1, &[1]);
        append(&mut wal, 2, &[2]);
        drop(wal);
        let path = dir.path().join(format!("{:020}.wal", 1));
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let (_, replay) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(replay.batches.len(), 1);
    }

    #[test]
    fn removes_only_files_fully_covered() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        append(&mut wal, 1, &[1]);
        wal.remove_through(1).unwrap();
        append(&mut wal, 2, &[2]);
        append(&mut wal, 3, &[3]);
        wal.remove_through(2).unwrap();
        drop(wal);
        let (_, replay) = Wal::open(dir.path(), 2).unwrap();
        let seqs: Vec<u64> = replay.batches.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![3]);
        let files = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(
            files, 1,
            "the file of seq 1 is gone, the file of 2..3 stays"
        );
    }
}
