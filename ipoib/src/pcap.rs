//! A `no_std` pcap writer for LINKTYPE_IPOIB (242), readable by Wireshark.
//!
//! Every record is a 40-byte prefix followed by the IPoIB packet (the 4-byte
//! encapsulation header and its payload):
//!
//! - sent packets: 20 zero bytes, then the destination [`HwAddr`] (flags,
//!   QPN in bytes 21..24, DGID in bytes 24..40);
//! - received packets: the GRH the HCA delivered (it starts with `0x6X`).
//!
//! Wireshark tells the two apart by the first two bytes: zero means "no GRH,
//! destination address only". A GRH whose first two bytes are zero (not
//! version 6) would therefore be misread.
//!
//! All header fields are written little-endian (magic `d4 c3 b2 a1`), so a
//! capture is byte-for-byte the same on every host.

use smoltcp::time::Instant;

use crate::wire::grh::HEADER_LEN as GRH_LEN;
use crate::wire::HwAddr;

/// The pcap link type for IP over InfiniBand with the 40-byte prefix.
pub const LINKTYPE_IPOIB: u32 = 242;
/// Length of the per-packet prefix (GRH or zeroes + destination address).
pub const PSEUDO_HEADER_LEN: usize = GRH_LEN;
/// Snap length used when `PcapWriter::new` is given 0.
pub const DEFAULT_SNAPLEN: u32 = 65535;
/// Length of the pcap global header.
pub const GLOBAL_HEADER_LEN: usize = 24;
/// Length of a pcap record header.
pub const RECORD_HEADER_LEN: usize = 16;

/// Where capture bytes go. Writes cannot fail at this level: a sink that can
/// fail records the failure itself (see `IoSink` with the `std` feature).
pub trait PcapSink {
    fn write_all(&mut self, data: &[u8]);
}

impl<S: PcapSink + ?Sized> PcapSink for &mut S {
    fn write_all(&mut self, data: &[u8]) {
        (**self).write_all(data);
    }
}

/// Writes a pcap stream of IPoIB packets into a [`PcapSink`].
#[derive(Debug)]
pub struct PcapWriter<S: PcapSink> {
    sink: S,
    snaplen: u32,
    records: u64,
}

impl<S: PcapSink> PcapWriter<S> {
    /// Writes the global header (pcap 2.4, link type 242). A `snaplen` of 0
    /// means [`DEFAULT_SNAPLEN`]. The snap length counts the 40-byte prefix.
    pub fn new(mut sink: S, snaplen: u32) -> PcapWriter<S> {
        let snaplen = if snaplen == 0 {
            DEFAULT_SNAPLEN
        } else {
            snaplen
        };
        let mut header = [0u8; GLOBAL_HEADER_LEN];
        header[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        header[4..6].copy_from_slice(&2u16.to_le_bytes());
        header[6..8].copy_from_slice(&4u16.to_le_bytes());
        // 8..12 thiszone = 0, 12..16 sigfigs = 0
        header[16..20].copy_from_slice(&snaplen.to_le_bytes());
        header[20..24].copy_from_slice(&LINKTYPE_IPOIB.to_le_bytes());
        sink.write_all(&header);
        PcapWriter {
            sink,
            snaplen,
            records: 0,
        }
    }

    /// Records a sent packet: 20 zero bytes, `dest`, then `ipoib_packet`.
    pub fn write_tx(&mut self, ts: Instant, dest: &HwAddr, ipoib_packet: &[u8]) {
        let mut prefix = [0u8; PSEUDO_HEADER_LEN];
        if let Some(dst) = prefix.get_mut(PSEUDO_HEADER_LEN - HwAddr::LEN..) {
            dst.copy_from_slice(&dest.to_bytes());
        }
        self.write_record(ts, &prefix, ipoib_packet);
    }

    /// Records a received packet with the GRH the HCA delivered.
    pub fn write_rx(&mut self, ts: Instant, grh: &[u8; GRH_LEN], ipoib_packet: &[u8]) {
        self.write_record(ts, grh, ipoib_packet);
    }

    pub fn snaplen(&self) -> u32 {
        self.snaplen
    }

    /// Number of records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }

    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    pub fn into_inner(self) -> S {
        self.sink
    }

    fn write_record(&mut self, ts: Instant, prefix: &[u8; PSEUDO_HEADER_LEN], packet: &[u8]) {
        let orig_len = PSEUDO_HEADER_LEN.saturating_add(packet.len());
        let incl_len = orig_len.min(usize::try_from(self.snaplen).unwrap_or(usize::MAX));
        let micros = u64::try_from(ts.total_micros()).unwrap_or(0);
        let secs = u32::try_from(micros / 1_000_000).unwrap_or(u32::MAX);
        let usecs = u32::try_from(micros % 1_000_000).unwrap_or(0);
        let to_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);

        let mut header = [0u8; RECORD_HEADER_LEN];
        header[0..4].copy_from_slice(&secs.to_le_bytes());
        header[4..8].copy_from_slice(&usecs.to_le_bytes());
        header[8..12].copy_from_slice(&to_u32(incl_len).to_le_bytes());
        header[12..16].copy_from_slice(&to_u32(orig_len).to_le_bytes());
        self.sink.write_all(&header);

        let from_prefix = incl_len.min(PSEUDO_HEADER_LEN);
        self.sink
            .write_all(prefix.get(..from_prefix).unwrap_or(prefix));
        let from_packet = incl_len - from_prefix;
        self.sink
            .write_all(packet.get(..from_packet).unwrap_or(packet));
        self.records = self.records.saturating_add(1);
    }
}

#[cfg(feature = "std")]
pub use io_sink::IoSink;

#[cfg(feature = "std")]
mod io_sink {
    use super::PcapSink;

    /// Adapts a `std::io::Write` to [`PcapSink`]. After the first I/O error it
    /// stops writing and keeps the error for [`IoSink::error`].
    #[derive(Debug)]
    pub struct IoSink<W: std::io::Write> {
        inner: W,
        written: u64,
        error: Option<std::io::Error>,
    }

    impl<W: std::io::Write> IoSink<W> {
        pub fn new(inner: W) -> IoSink<W> {
            IoSink {
                inner,
                written: 0,
                error: None,
            }
        }

        /// Bytes successfully handed to the writer.
        pub fn bytes_written(&self) -> u64 {
            self.written
        }

        /// The first error, if any; writing stopped there.
        pub fn error(&self) -> Option<&std::io::Error> {
            self.error.as_ref()
        }

        /// Takes the error and resumes writing.
        pub fn take_error(&mut self) -> Option<std::io::Error> {
            self.error.take()
        }

        pub fn flush(&mut self) -> std::io::Result<()> {
            self.inner.flush()
        }

        pub fn get_ref(&self) -> &W {
            &self.inner
        }

        pub fn into_inner(self) -> W {
            self.inner
        }
    }

    impl<W: std::io::Write> PcapSink for IoSink<W> {
        fn write_all(&mut self, data: &[u8]) {
            if self.error.is_some() {
                return;
            }
            match self.inner.write_all(data) {
                Ok(()) => {
                    let n = u64::try_from(data.len()).unwrap_or(u64::MAX);
                    self.written = self.written.saturating_add(n);
                }
                Err(e) => self.error = Some(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::grh::build_grh;
    use verbs_shim::{Gid, Qpn};

    impl PcapSink for Vec<u8> {
        fn write_all(&mut self, data: &[u8]) {
            self.extend_from_slice(data);
        }
    }

    #[test]
    fn global_header() {
        let w = PcapWriter::new(Vec::new(), 4096);
        assert_eq!(
            w.into_inner(),
            [
                0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x10, 0, 0, 242,
                0, 0, 0
            ]
        );
        assert_eq!(PcapWriter::new(Vec::new(), 0).snaplen(), DEFAULT_SNAPLEN);
    }

    #[test]
    fn tx_record() {
        let mut w = PcapWriter::new(Vec::new(), 0);
        let dest = HwAddr::new(Qpn::new(0x49).unwrap(), Gid::from_parts(0xfe80 << 48, 3));
        w.write_tx(
            Instant::from_micros(1_500_000),
            &dest,
            &[0x08, 0x06, 0, 0, 0xaa],
        );
        assert_eq!(w.records(), 1);
        let out = w.into_inner();
        let rec = &out[GLOBAL_HEADER_LEN..];
        assert_eq!(
            &rec[..16],
            &[1, 0, 0, 0, 0x20, 0xa1, 7, 0, 45, 0, 0, 0, 45, 0, 0, 0]
        );
        assert_eq!(&rec[16..36], &[0; 20]);
        assert_eq!(&rec[36..56], &dest.to_bytes());
        assert_eq!(&rec[56..], &[0x08, 0x06, 0, 0, 0xaa]);
    }

    #[test]
    fn snaplen_truncates_prefix_and_packet() {
        for snap in [1u32, 39, 40, 41, 44] {
            let mut w = PcapWriter::new(Vec::new(), snap);
            let grh = build_grh(&Gid::ZERO, &Gid::ZERO, 8);
            w.write_rx(Instant::from_micros(-5), &grh, &[1, 2, 3, 4, 5, 6]);
            let out = w.into_inner();
            let rec = &out[GLOBAL_HEADER_LEN..];
            let incl = snap.min(46) as usize;
            assert_eq!(&rec[..8], &[0; 8], "negative time clamps to 0");
            assert_eq!(rec[8..12], (incl as u32).to_le_bytes());
            assert_eq!(rec[12..16], 46u32.to_le_bytes());
            assert_eq!(rec.len(), 16 + incl);
            let body: Vec<u8> = grh.iter().chain(&[1, 2, 3, 4, 5, 6]).copied().collect();
            assert_eq!(&rec[16..], &body[..incl]);
        }
    }

    #[cfg(feature = "std")]
    #[test]
    fn io_sink_keeps_first_error() {
        struct Fail(u32);
        impl std::io::Write for Fail {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0 += 1;
                if self.0 > 1 {
                    Err(std::io::Error::other("full"))
                } else {
                    Ok(buf.len())
                }
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut w = PcapWriter::new(IoSink::new(Fail(0)), 0);
        w.write_tx(Instant::ZERO, &HwAddr::default(), &[0; 4]);
        w.write_tx(Instant::ZERO, &HwAddr::default(), &[0; 4]);
        let sink = w.into_inner();
        assert_eq!(sink.bytes_written(), 24);
        assert!(sink.error().is_some());
        assert_eq!(sink.get_ref().0, 2);
    }
}
