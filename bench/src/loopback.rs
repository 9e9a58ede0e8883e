//! The peer stack: one smoltcp interface on `smoltcp::phy::Loopback`
//! (Medium::Ip, 127.0.0.1/8), on the same virtual clock discipline as the
//! testkit's `Net`.
//!
//! The device is `Loopback` itself, wrapped only to count packets (so an idle
//! round can be told from a busy one) and, optionally, to report other
//! capabilities (MTU, checksums) than `Loopback`'s own.

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Loopback, Medium};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, Ipv4Address};

/// The interface's address.
pub const ADDR: Ipv4Address = Ipv4Address::new(127, 0, 0, 1);

/// Virtual time per busy round, as in the testkit's `Net`.
const ROUND_TIME: Duration = Duration::from_micros(20);
/// Largest jump when idle and no timer is pending, as in `Net`.
const IDLE_STEP: Duration = Duration::from_millis(10);

/// `Loopback` plus packet counters and the capabilities it reports.
pub struct CountingLoopback {
    inner: Loopback,
    caps: DeviceCapabilities,
    /// Packets handed to the device.
    pub tx_packets: u64,
}

impl CountingLoopback {
    /// `Loopback` as it is (MTU 65535, checksums neither made nor checked).
    pub fn plain() -> CountingLoopback {
        let inner = Loopback::new(Medium::Ip);
        let caps = inner.capabilities();
        CountingLoopback {
            inner,
            caps,
            tx_packets: 0,
        }
    }

    /// `Loopback` reporting `caps` instead (e.g. the IPoIB device's MTU and
    /// checksum duties). The medium stays IP.
    pub fn with_caps(mut caps: DeviceCapabilities) -> CountingLoopback {
        caps.medium = Medium::Ip;
        CountingLoopback {
            inner: Loopback::new(Medium::Ip),
            caps,
            tx_packets: 0,
        }
    }
}

/// `Loopback`'s transmit token, counting what is actually sent.
pub struct CountingTx<'a> {
    inner: <Loopback as Device>::TxToken<'a>,
    count: &'a mut u64,
}

impl phy::TxToken for CountingTx<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        *self.count += 1;
        self.inner.consume(len, f)
    }
}

impl Device for CountingLoopback {
    type RxToken<'a> = <Loopback as Device>::RxToken<'a>;
    type TxToken<'a> = CountingTx<'a>;

    fn receive(&mut self, timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let count = &mut self.tx_packets;
        self.inner
            .receive(timestamp)
            .map(|(rx, inner)| (rx, CountingTx { inner, count }))
    }

    fn transmit(&mut self, timestamp: Instant) -> Option<Self::TxToken<'_>> {
        let count = &mut self.tx_packets;
        self.inner
            .transmit(timestamp)
            .map(|inner| CountingTx { inner, count })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.caps.clone()
    }
}

/// One interface on a counting loopback device, with its sockets and clock.
pub struct Lo {
    pub device: CountingLoopback,
    pub iface: Interface,
    pub sockets: SocketSet<'static>,
    pub now: Instant,
}

impl Lo {
    pub fn new(mut device: CountingLoopback) -> Lo {
        let now = Instant::from_millis(1);
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = 1;
        let mut iface = Interface::new(config, &mut device, now);
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(ADDR), 8));
        });
        Lo {
            device,
            iface,
            sockets: SocketSet::new(Vec::new()),
            now,
        }
    }

    /// One poll of the interface. Returns true if any packet was sent (it
    /// will be received on the next round).
    pub fn round(&mut self) -> bool {
        let before = self.device.tx_packets;
        self.iface
            .poll(self.now, &mut self.device, &mut self.sockets);
        self.device.tx_packets != before
    }

    /// Moves the clock like `Net::advance`.
    pub fn advance(&mut self, busy: bool) {
        if busy {
            self.now += ROUND_TIME;
            return;
        }
        self.now = match self.iface.poll_at(self.now, &self.sockets) {
            Some(t) if t > self.now => t.min(self.now + IDLE_STEP),
            _ => self.now + ROUND_TIME,
        };
    }
}
