//! `--pcap FILE`: every packet on the fabric, in LINKTYPE_IPOIB (242).
//!
//! Each guest's back half has a tap. What a guest sends is written with its
//! destination address; what a guest receives is written only when it came
//! from outside this back end (another host on a real fabric), so that
//! guest-to-guest traffic appears once.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufWriter};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use ipoib::pcap::{IoSink, PcapWriter};
use ipoib::wire::HwAddr;
use smoltcp::time::Instant;
use verbs_shim::back::{Tap, TapEvent};
use verbs_shim::Gid;

type Writer = PcapWriter<IoSink<BufWriter<File>>>;

#[derive(Clone)]
pub struct FabricCapture {
    writer: Arc<Mutex<Writer>>,
    /// GIDs of the guests this back end serves.
    local: Arc<RwLock<HashSet<Gid>>>,
}

fn now() -> Instant {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    Instant::from_micros(micros as i64)
}

impl FabricCapture {
    pub fn create(path: &Path) -> io::Result<FabricCapture> {
        let file = File::create(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create --pcap file {}: {e}", path.display()),
            )
        })?;
        Ok(FabricCapture {
            writer: Arc::new(Mutex::new(PcapWriter::new(
                IoSink::new(BufWriter::new(file)),
                0,
            ))),
            local: Arc::new(RwLock::new(HashSet::new())),
        })
    }

    pub fn add_local(&self, gid: Gid) {
        self.local
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(gid);
    }

    pub fn remove_local(&self, gid: &Gid) {
        self.local
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(gid);
    }

    /// A tap for one guest's back half.
    pub fn tap(&self) -> Tap {
        let this = self.clone();
        Box::new(move |event| this.record(event))
    }

    fn record(&self, event: TapEvent<'_>) {
        match event {
            TapEvent::Sent {
                dest_qpn,
                dest_gid,
                frame,
            } => {
                let dest = HwAddr::new(dest_qpn, dest_gid);
                self.writer
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .write_tx(now(), &dest, frame);
            }
            TapEvent::Received { grh, frame } => {
                let from_local = Gid::from_slice(&grh[8..24]).is_some_and(|sgid| {
                    self.local
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .contains(&sgid)
                });
                if !from_local {
                    self.writer
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .write_rx(now(), grh, frame);
                }
            }
        }
    }

    /// Pushes buffered records to the file.
    pub fn flush(&self) {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = w.sink_mut().flush() {
            log::warn!("pcap: {e}");
        }
        if let Some(e) = w.sink_mut().take_error() {
            log::warn!("pcap: {e}");
        }
    }
}
