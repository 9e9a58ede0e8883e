//! A capture that several owners can share: a pcap file behind a mutex, or
//! nothing.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::{Arc, Mutex};

use ipoib::pcap::{IoSink, PcapWriter};
use ipoib::wire::HwAddr;
use ipoib::Capture;
use smoltcp::time::Instant;

type FileWriter = PcapWriter<IoSink<BufWriter<File>>>;

/// Either no capture, or a shared LINKTYPE_IPOIB file.
#[derive(Clone, Default)]
pub struct SharedCapture(Option<Arc<Mutex<FileWriter>>>);

impl SharedCapture {
    pub fn none() -> SharedCapture {
        SharedCapture(None)
    }

    /// Creates (truncates) `path` and writes the pcap header.
    pub fn create(path: &Path) -> std::io::Result<SharedCapture> {
        let file = BufWriter::new(File::create(path)?);
        let writer = PcapWriter::new(IoSink::new(file), 0);
        Ok(SharedCapture(Some(Arc::new(Mutex::new(writer)))))
    }

    /// Flushes buffered records to the file.
    pub fn flush(&self) -> std::io::Result<()> {
        if let Some(w) = &self.0 {
            let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
            w.sink_mut().flush()?;
            if let Some(e) = w.sink_mut().take_error() {
                return Err(e);
            }
        }
        Ok(())
    }

    #[inline]
    fn with(&self, f: impl FnOnce(&mut FileWriter)) {
        if let Some(w) = &self.0 {
            f(&mut w.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }
}

impl Capture for SharedCapture {
    #[inline]
    fn transmitted(&mut self, at: Instant, dest: &HwAddr, packet: &[u8]) {
        self.with(|w| w.write_tx(at, dest, packet));
    }

    #[inline]
    fn received(&mut self, at: Instant, grh: &[u8; 40], packet: &[u8]) {
        self.with(|w| w.write_rx(at, grh, packet));
    }
}
