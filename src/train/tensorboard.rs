//! TensorBoard event files: scalars that `tensorboard --logdir runs` plots.
//!
//! A file `events.out.tfevents.<time>.<host>.<pid>` holds records `[length u64][masked CRC-32C
//! of length][Event protobuf][masked CRC-32C of the event]`; the first event names the format
//! (`brain.Event:2`), each later one carries a `Summary` of tagged scalar values. The messages
//! are declared with prost's derive (no protoc needed); the checksum comes from the `crc` crate.
//! The tests read the files back with TensorBoard's own reader.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

#[derive(Clone, PartialEq, prost::Message)]
struct Event {
    #[prost(double, tag = "1")]
    wall_time: f64,
    #[prost(int64, tag = "2")]
    step: i64,
    #[prost(oneof = "What", tags = "3, 5")]
    what: Option<What>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum What {
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
}

#[derive(Clone, PartialEq, prost::Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<SummaryValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SummaryValue {
    #[prost(string, tag = "1")]
    tag: String,
    /// `optional` so that a value of exactly 0 is still written.
    #[prost(float, optional, tag = "2")]
    simple_value: Option<f32>,
}

const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// TensorFlow's masked CRC-32C.
fn masked_crc(bytes: &[u8]) -> u32 {
    let c = CRC32C.checksum(bytes);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Writes scalars to one event file in a run folder (e.g. `runs/summarizer`), flushing after each
/// write so that a running TensorBoard sees them at once.
#[derive(Debug)]
pub struct SummaryWriter {
    path: PathBuf,
    file: std::fs::File,
}

impl SummaryWriter {
    /// Creates `dir` and a new event file in it.
    pub fn new(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        // A counter keeps two writers of one process in one second apart.
        static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("events.out.tfevents.{now}.{host}.{}.{n}", std::process::id()));
        let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut w = SummaryWriter { path, file };
        w.write_event(Event {
            wall_time: wall_time(),
            step: 0,
            what: Some(What::FileVersion("brain.Event:2".into())),
        })?;
        Ok(w)
    }

    /// The event file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds `value` to the curve `tag` (e.g. `loss/train`) at `step`. A non-finite value is an
    /// error (TensorBoard would draw nothing sensible).
    pub fn add_scalar(&mut self, tag: &str, value: f64, step: i64) -> Result<()> {
        if !value.is_finite() {
            return Err(Error::Input(format!(
                "TensorBoard scalar {tag:?} at step {step}: expected a finite value, got {value}"
            )));
        }
        let summary = Summary { value: vec![SummaryValue { tag: tag.to_string(), simple_value: Some(value as f32) }] };
        self.write_event(Event { wall_time: wall_time(), step, what: Some(What::Summary(summary)) })
    }

    fn write_event(&mut self, event: Event) -> Result<()> {
        let data = prost::Message::encode_to_vec(&event);
        let len = (data.len() as u64).to_le_bytes();
        let mut record = Vec::with_capacity(data.len() + 16);
        record.extend_from_slice(&len);
        record.extend_from_slice(&masked_crc(&len).to_le_bytes());
        record.extend_from_slice(&data);
        record.extend_from_slice(&masked_crc(&data).to_le_bytes());
        self.file.write_all(&record).and_then(|_| self.file.flush()).map_err(|e| Error::io(&self.path, e))
    }
}

/// A new run folder `<root>/<name>-<UTC time>` (e.g. `runs/summarizer-2026-11-26T11-30-05`), so
/// every training run is its own curve in TensorBoard.
pub fn run_dir(root: &Path, name: &str) -> PathBuf {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(':', "-")
        .trim_end_matches('Z')
        .to_string();
    root.join(format!("{name}-{stamp}"))
}

fn wall_time() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRC-32C's check value, and the masked values TensorBoard's own `masked_crc32c`
    /// (tensorboard.compat.tensorflow_stub.pywrap_tensorflow) gives for the same bytes.
    #[test]
    fn the_checksum_is_tensorflows_masked_crc32c() {
        assert_eq!(CRC32C.checksum(b"123456789"), 0xe306_9283);
        assert_eq!(masked_crc(b"123456789"), 0xc78a_b0e5);
        assert_eq!(masked_crc(b""), 0xa282_ead8);
    }

    #[test]
    fn records_are_framed_and_non_finite_values_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SummaryWriter::new(dir.path()).unwrap();
        w.add_scalar("loss/train", 0.0, 1).unwrap();
        assert!(w.add_scalar("loss/train", f64::NAN, 2).unwrap_err().to_string().contains("finite"));
        let bytes = std::fs::read(w.path()).unwrap();
        // Walk the records: each length and checksum must agree.
        let (mut at, mut events) = (0, 0);
        while at < bytes.len() {
            let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
            assert_eq!(u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()), masked_crc(&bytes[at..at + 8]));
            let data = &bytes[at + 12..at + 12 + len];
            assert_eq!(u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap()), masked_crc(data));
            let event: Event = prost::Message::decode(data).unwrap();
            if events == 1 {
                let Some(What::Summary(s)) = event.what else { panic!("{event:?}") };
                assert_eq!(
                    (s.value[0].tag.as_str(), s.value[0].simple_value, event.step),
                    ("loss/train", Some(0.0), 1)
                );
            }
            at += 16 + len;
            events += 1;
        }
        assert_eq!(events, 2);
        assert!(w.path().file_name().unwrap().to_string_lossy().starts_with("events.out.tfevents."));
    }
}
