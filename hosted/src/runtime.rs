//! The hosted guest's main loop: the same network core a unikernel runs
//! (`ipoib` on the `front` provider, smoltcp, the services), driven by
//! interrupts from the back end and smoltcp's timers.

use std::path::Path;
use std::time::Duration;

use ipoib::{IpoibDevice, IpoibError};
use netcore::{NetConfig, ServiceHost};
use ring::LayoutParams;
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::wire::HardwareAddress;
use verbs_shim::front::FrontHca;
use verbs_shim::HcaError;

use crate::transport::{Doorbell, Transport, Wake};
use crate::HostedError;

/// How long to wait for a back end at start and after it went away.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest sleep without a timer, so signals and shutdown are noticed.
const MAX_SLEEP: Duration = Duration::from_millis(500);

/// The channel parameters a hosted guest asks for: 256 TX and RX slots of
/// 4 KiB (about 2 MiB of buffers), rings as large as the slot counts.
pub const PARAMS: LayoutParams = LayoutParams {
    ctrl_order: 4,
    tx_order: 8,
    rx_order: 8,
    tx_slots: 256,
    rx_slots: 256,
    slot_size: 4096,
};

pub type Device = IpoibDevice<FrontHca<Doorbell>>;

pub struct Runtime {
    pub transport: Transport,
    pub device: Device,
    pub iface: Interface,
    pub sockets: SocketSet<'static>,
    pub services: ServiceHost,
    origin: std::time::Instant,
    /// Times the guest moved to a new back end (restart or new epoch).
    pub reattaches: u64,
    /// Times the loop slept waiting for an interrupt or timer.
    pub sleeps: u64,
}

impl Runtime {
    /// Connects to the back end's socket, attaches, brings IPoIB up and
    /// starts the configured services.
    pub fn start(socket: &Path, net: &NetConfig) -> Result<Runtime, HostedError> {
        let mut transport = Transport::connect(socket, ATTACH_TIMEOUT)?;
        let front = transport.attach(PARAMS, ATTACH_TIMEOUT)?;
        let address = net.ip;
        let mut device = IpoibDevice::new(front, net.ipoib_config()).map_err(HostedError::Ipoib)?;
        let origin = std::time::Instant::now();
        let mut iface_config = Config::new(HardwareAddress::Ip);
        iface_config.random_seed =
            u64::from(u32::from(address.address())) ^ origin.elapsed().as_nanos() as u64;
        let mut iface = Interface::new(iface_config, &mut device, smoltcp::time::Instant::ZERO);
        net.apply(&mut iface)
            .map_err(|_| HostedError::Protocol("cannot add the default route".into()))?;
        let mut sockets = SocketSet::new(Vec::new());
        let services = ServiceHost::new(net, &mut sockets);
        Ok(Runtime {
            transport,
            device,
            iface,
            sockets,
            services,
            origin,
            reattaches: 0,
            sleeps: 0,
        })
    }

    pub fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(self.origin.elapsed().as_micros() as i64)
    }

    fn service(&mut self) -> Result<bool, HostedError> {
        let now = self.now();
        match self.device.service(now) {
            Ok(p) => Ok(p),
            Err(IpoibError::Device(HcaError::Disconnected)) => {
                log::warn!("the back end went away (new epoch or closed); re-attaching");
                self.reattach(false)?;
                Ok(true)
            }
            Err(e) => Err(HostedError::Ipoib(e)),
        }
    }

    fn reattach(&mut self, reconnect: bool) -> Result<(), HostedError> {
        if reconnect {
            self.transport.reconnect(ATTACH_TIMEOUT)?;
        }
        let front = self.transport.attach(PARAMS, ATTACH_TIMEOUT)?;
        self.device
            .replace_device(front)
            .map_err(HostedError::Ipoib)?;
        self.reattaches += 1;
        Ok(())
    }

    /// One pass: completions and timers, smoltcp, then post what it queued.
    pub fn poll(&mut self) -> Result<bool, HostedError> {
        let mut progress = self.service()?;
        let now = self.now();
        progress |= self.iface.poll(now, &mut self.device, &mut self.sockets)
            != smoltcp::iface::PollResult::None;
        let stats = self.device.stats();
        if self.services.poll(&mut self.sockets, &stats) {
            // What the services wrote goes out in this pass.
            progress = true;
            self.iface.poll(now, &mut self.device, &mut self.sockets);
        }
        progress |= self.service()?;
        Ok(progress)
    }

    /// Arms the interrupt and sleeps until it fires or the next timer is
    /// due. Returns at once if work is already waiting.
    pub fn idle_wait(&mut self) -> Result<(), HostedError> {
        match self.device.arm() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(IpoibError::Device(HcaError::Disconnected)) => return self.reattach(false),
            Err(e) => return Err(HostedError::Ipoib(e)),
        }
        let now = self.now();
        let mut delay = self
            .iface
            .poll_delay(now, &self.sockets)
            .map(Duration::from)
            .unwrap_or(MAX_SLEEP);
        if let Some(at) = self.device.poll_at() {
            delay = delay.min(Duration::from(
                (at - now).max(smoltcp::time::Duration::ZERO),
            ));
        }
        self.sleeps += 1;
        match self.transport.wait(Some(delay.min(MAX_SLEEP)))? {
            Wake::Interrupt | Wake::Timeout => Ok(()),
            Wake::BackendGone => {
                log::warn!("the back end closed the connection; waiting for it to come back");
                self.reattach(true)
            }
        }
    }
}
