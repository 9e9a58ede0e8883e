//! The channel's Xen transport: the guest's window lives in its own RAM,
//! granted page by page to the back-end domain; an event channel carries
//! notifications both ways; xenstore carries the grant references and the
//! port, with the XenbusState handshake. See `xen_proto::ibchan` for the
//! nodes and docs/CHANNEL.md for the protocol.
//!
//! 1. The back end (ib-backend in dom0) writes `device/ibchan/0/backend`
//!    and `backend-id` when it adopts this domain, and its own `state`
//!    InitWait.
//! 2. We allocate the window, grant its pages read-write and a directory
//!    of their references read-only, allocate an unbound event channel for
//!    the back end, publish it all in one transaction, and go Initialised.
//! 3. The back end maps the window, binds the port, writes the channel
//!    header, and goes Connected; we go Connected, and the ring handshake
//!    (`FrontHca::attach`) runs exactly as under ivshmem.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use ring::Window;
use xen_proto::ibchan::{self, node};
use xen_proto::xenbus::parse_u32;
use xen_proto::XenbusState;

use crate::config::XenFault;
use crate::timer::{now_micros, wait_for_interrupt};

use super::events;
use super::grant::{self, GrantError, GrantRef};
use super::hypercall::{self, XenError};
use super::xenstore::{XenStore, XenStoreError};

/// Why the Xen channel could not be set up.
#[derive(Debug)]
pub enum XenChannelError {
    XenStore(XenStoreError),
    /// No back end adopted this domain within the wait.
    NoDevice {
        waited_ms: u64,
    },
    /// The back end gave up (Closing or Closed) instead of reaching `want`.
    BackendState {
        want: XenbusState,
        seen: XenbusState,
    },
    /// The back end did not reach `want` within the wait.
    BackendTimeout {
        want: XenbusState,
        seen: XenbusState,
        waited_ms: u64,
    },
    BadNode {
        node: &'static str,
    },
    TooLarge {
        pages: u32,
        max: u32,
    },
    Grant(GrantError),
    EventChannel(XenError),
}

impl fmt::Display for XenChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XenChannelError::XenStore(e) => write!(f, "xenstore: {e}"),
            XenChannelError::NoDevice { waited_ms } => write!(
                f,
                "no ibchan device in xenstore after {waited_ms} ms: start ib-backend in dom0 \
                 with a seat for this domain (--guest name=NAME,xen-domain=DOMAIN-NAME)"
            ),
            XenChannelError::BackendState { want, seen } => {
                write!(f, "the back end is {seen}, not {want}")
            }
            XenChannelError::BackendTimeout {
                want,
                seen,
                waited_ms,
            } => write!(
                f,
                "the back end is still {seen}, not {want}, after {waited_ms} ms"
            ),
            XenChannelError::BadNode { node } => {
                write!(f, "the back end's {node} node is missing or malformed")
            }
            XenChannelError::TooLarge { pages, max } => write!(
                f,
                "the channel needs {pages} pages; the back end maps at most {max} (raise the seat's window=)"
            ),
            XenChannelError::Grant(e) => write!(f, "{e}"),
            XenChannelError::EventChannel(e) => write!(f, "{e}"),
        }
    }
}

impl From<XenStoreError> for XenChannelError {
    fn from(e: XenStoreError) -> Self {
        XenChannelError::XenStore(e)
    }
}

/// A connected Xen channel.
pub struct XenChannel {
    xs: XenStore,
    window: Window,
    /// The window's pages and their grants.
    _window_grants: GrantedPages,
    /// The directory pages and their grants.
    _dir: GrantedPages,
    port: u32,
    backend_id: u16,
    backend: String,
    frontend: String,
    pages: u32,
}

/// Notifies the back end through the channel's event channel.
#[derive(Clone, Copy, Debug)]
pub struct XenBell(u32);

impl XenBell {
    pub fn ring(&self) {
        events::notify(self.0);
    }
}

/// Heap pages granted to the back end. Dropping it (a failed `connect`)
/// ends the grants first, and gives the pages back to the heap only if
/// every grant ended: a page the back end still has mapped is kept for
/// ever. Freeing granted pages let the back end read the allocator's hole
/// header in a freed directory page (`grant ref 0 at index 1 is reserved`).
struct GrantedPages {
    pages: Window,
    refs: Vec<GrantRef>,
}

impl GrantedPages {
    fn new(len: usize) -> GrantedPages {
        GrantedPages {
            pages: Window::new_heap(len),
            refs: Vec::new(),
        }
    }

    /// Grants page `index` to `domid`.
    fn grant(&mut self, domid: u16, index: usize, readonly: bool) -> Result<GrantRef, GrantError> {
        let gfn = (self.pages.as_ptr() as u64 + (index * ibchan::PAGE_SIZE) as u64) >> 12;
        let gref = grant::grant(domid, gfn, readonly)?;
        self.refs.push(gref);
        Ok(gref)
    }
}

impl Drop for GrantedPages {
    fn drop(&mut self) {
        let mut kept = 0usize;
        let mut first_err = None;
        for &gref in &self.refs {
            if let Err(e) = grant::end_access(gref) {
                kept += 1;
                first_err.get_or_insert(e);
            }
        }
        if let Some(e) = first_err {
            // Never back to the heap: the other domain may still use it.
            core::mem::forget(self.pages.clone());
            crate::println!(
                "ibguest: xen: {kept} of {} grant(s) at {:#x} could not be ended ({e}); keeping the {} KiB for ever",
                self.refs.len(),
                self.pages.as_ptr() as u64,
                self.pages.len() / 1024
            );
        }
    }
}

/// The first byte at which `page` no longer holds `expected`, and the four
/// words there (for the log).
fn first_difference(page: &Window, expected: &[u8]) -> Option<(usize, [u32; 4])> {
    let mut now = vec![0u8; expected.len()];
    page.read_bytes(0, &mut now).ok()?;
    let at = now.iter().zip(expected).position(|(a, b)| a != b)?;
    let word_at = at & !15;
    let mut words = [0u32; 4];
    for (i, w) in words.iter_mut().enumerate() {
        let o = word_at + i * 4;
        if let Some(b) = now.get(o..o + 4) {
            *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
    }
    Some((at, words))
}

const TOKEN_FRONT: &str = "ibchan-fe";
const TOKEN_BACK: &str = "ibchan-be";

fn state_of(xs: &mut XenStore, dir: &str) -> Result<XenbusState, XenStoreError> {
    Ok(xs
        .read(&format!("{dir}/{}", node::STATE))?
        .map_or(XenbusState::Unknown, |v| XenbusState::parse(&v)))
}

/// Waits for a watch event (or 100 ms), with interrupts doing the waking.
fn wait_a_little(xs: &mut XenStore) -> Result<(), XenStoreError> {
    if xs.take_watch_event()?.is_none() {
        wait_for_interrupt(Some(now_micros() + 100_000));
    }
    Ok(())
}

/// Something to look at on every pass of a wait.
trait WaitCheck {
    /// `waited`: microseconds since the wait began.
    fn check(&mut self, waited: u64);
}

struct NoCheck;

impl WaitCheck for NoCheck {
    fn check(&mut self, _waited: u64) {}
}

/// The guest's own check of its published directory: it must hold what we
/// wrote for as long as it is granted. Tells a guest that overwrites (or
/// frees) its directory from a back end that misreads it.
struct DirCheck<'a> {
    dir: &'a Window,
    expected: &'a [u8],
    reported: bool,
}

impl WaitCheck for DirCheck<'_> {
    fn check(&mut self, waited: u64) {
        if self.reported {
            return;
        }
        if let Some((at, words)) = first_difference(self.dir, self.expected) {
            self.reported = true;
            let (used, free) = crate::boot::heap::usage();
            crate::println!(
                "ibguest: xen: directory page changed at {:#x} (+{at:#x}) {} ms into the wait: it now holds {words:?} there (heap {used} bytes used, {free} free)",
                self.dir.as_ptr() as u64 + at as u64,
                waited / 1000
            );
        }
    }
}

/// Logs what the PV clock did since boot, if it did anything odd.
fn report_clock() {
    let a = super::clock::anomalies();
    if a != crate::pvclock::ClockAnomalies::default() {
        crate::println!(
            "ibguest: xen: clock stepped back {} time(s) since boot (largest {} ns, held; {} TSC read(s) behind Xen's stamp, clamped)",
            a.backsteps,
            a.largest_backstep,
            a.tsc_behind
        );
    }
}

impl XenChannel {
    /// Finds the back end, publishes a window of `window_len` bytes and
    /// waits until the back end has connected it. `wait_micros` bounds
    /// each wait for the back end.
    ///
    /// `fault` (`xen-fault=`, for tests) publishes a broken channel on
    /// purpose, which the back end must refuse.
    pub fn connect(
        window_len: usize,
        wait_micros: u64,
        fault: Option<XenFault>,
    ) -> Result<XenChannel, XenChannelError> {
        let mut xs = XenStore::open()?;
        let frontend = ibchan::frontend_relative();
        let start = now_micros();
        xs.watch(&frontend, TOKEN_FRONT)?;
        // 1. Wait for the back end to adopt us.
        let (backend_id, backend) = loop {
            let id = xs.read(&format!("{frontend}/{}", node::BACKEND_ID))?;
            let path = xs.read(&format!("{frontend}/{}", node::BACKEND))?;
            if let (Some(id), Some(path)) = (id, path) {
                let id = parse_u32(&id).and_then(|v| u16::try_from(v).ok()).ok_or(
                    XenChannelError::BadNode {
                        node: node::BACKEND_ID,
                    },
                )?;
                let path = String::from_utf8(path).map_err(|_| XenChannelError::BadNode {
                    node: node::BACKEND,
                })?;
                break (id, path);
            }
            let waited = now_micros().saturating_sub(start);
            if waited > wait_micros {
                return Err(XenChannelError::NoDevice {
                    waited_ms: waited / 1000,
                });
            }
            wait_a_little(&mut xs)?;
        };
        xs.watch(&format!("{backend}/{}", node::STATE), TOKEN_BACK)?;
        let fe_state = format!("{frontend}/{}", node::STATE);
        xs.write(&fe_state, b"1")?;
        crate::println!(
            "ibguest: xen: back end is domain {backend_id} ({backend}); waiting for InitWait"
        );
        Self::wait_backend(&mut xs, &backend, XenbusState::InitWait, wait_micros)?;

        // 2. The window, its grants, the directory, the port.
        let max = xs
            .read(&format!("{backend}/{}", node::MAX_WINDOW_PAGES))?
            .and_then(|v| parse_u32(&v))
            .ok_or(XenChannelError::BadNode {
                node: node::MAX_WINDOW_PAGES,
            })?;
        let pages = window_len.div_ceil(ibchan::PAGE_SIZE) as u32;
        if pages > max {
            return Err(XenChannelError::TooLarge { pages, max });
        }
        let mut window = GrantedPages::new(pages as usize * ibchan::PAGE_SIZE);
        let dir_pages = ibchan::dir_pages_for(pages);
        let mut dir = GrantedPages::new(dir_pages as usize * ibchan::PAGE_SIZE);
        let base = window.pages.as_ptr() as u64;
        let read_only = fault == Some(XenFault::ReadOnly);
        for i in 0..pages as usize {
            window
                .grant(backend_id, i, read_only)
                .map_err(XenChannelError::Grant)?;
        }
        // What the directory holds; it is checked again while we wait.
        let mut dir_bytes = vec![0u8; dir_pages as usize * ibchan::PAGE_SIZE];
        for (d, chunk) in window
            .refs
            .chunks(ibchan::REFS_PER_DIR_PAGE as usize)
            .enumerate()
        {
            let mut page = [0u8; ibchan::PAGE_SIZE];
            ibchan::encode_dir_page(chunk, &mut page);
            let at = d * ibchan::PAGE_SIZE;
            dir_bytes[at..at + ibchan::PAGE_SIZE].copy_from_slice(&page);
        }
        dir.pages
            .write_bytes(0, &dir_bytes)
            .map_err(|_| XenChannelError::Grant(GrantError::Map))?;
        let mut dir_refs = Vec::with_capacity(dir_pages as usize);
        for d in 0..dir_pages as usize {
            dir_refs.push(
                dir.grant(backend_id, d, true)
                    .map_err(XenChannelError::Grant)?,
            );
        }
        let port =
            hypercall::evtchn_alloc_unbound(backend_id).map_err(XenChannelError::EventChannel)?;
        let _ = events::unmask(port);
        let (mut pub_pages, mut pub_port) = (pages, port);
        if let Some(f) = fault {
            match f {
                // A reference past every one granted so far.
                XenFault::BadRef => dir_refs[0] = grant::usage().0 + grant::FIRST_REF + 1000,
                XenFault::BadPort => pub_port = port + 1000,
                XenFault::HugeWindow => pub_pages = max + 1,
                XenFault::ReadOnly => {}
            }
            crate::println!(
                "ibguest: xen: xen-fault={}: publishing a broken channel on purpose",
                f.name()
            );
        }

        // 3. Publish, atomically.
        loop {
            let tx = xs.transaction_start()?;
            let w = |xs: &mut XenStore, name: &str, value: &str| {
                xs.write_tx(tx, &format!("{frontend}/{name}"), value.as_bytes())
            };
            w(&mut xs, node::PROTOCOL, ibchan::PROTOCOL)?;
            w(&mut xs, node::WINDOW_PAGES, &format!("{pub_pages}"))?;
            w(
                &mut xs,
                node::DIR_PAGES,
                &format!("{}", ibchan::dir_pages_for(pub_pages)),
            )?;
            for (i, r) in dir_refs.iter().enumerate() {
                w(&mut xs, &ibchan::dir_ref_node(i as u32), &format!("{r}"))?;
            }
            w(&mut xs, node::EVENT_CHANNEL, &format!("{pub_port}"))?;
            w(&mut xs, node::STATE, "3")?;
            if xs.transaction_end(tx, true)? {
                break;
            }
        }
        let (used, frames) = grant::usage();
        crate::println!(
            "ibguest: xen: published {pages} window pages ({} KiB at {base:#x}, {dir_pages} directory page(s) at {:#x} as refs {dir_refs:?}, {used} grants in {frames} table frame(s)) and event channel {port}",
            pages * 4,
            dir.pages.as_ptr() as u64
        );
        let wait_start = now_micros();
        let mut check = DirCheck {
            dir: &dir.pages,
            expected: &dir_bytes,
            reported: false,
        };
        let waited = Self::wait_backend_checking(
            &mut xs,
            &backend,
            XenbusState::Connected,
            wait_micros,
            &mut check,
        );
        // Once more after the wait, before anything is dropped.
        check.check(now_micros().saturating_sub(wait_start));
        report_clock();
        waited?;
        xs.write(&fe_state, b"4")?;
        let window_view = window.pages.clone();
        Ok(XenChannel {
            xs,
            window: window_view,
            _window_grants: window,
            _dir: dir,
            port,
            backend_id,
            backend,
            frontend,
            pages,
        })
    }

    fn wait_backend(
        xs: &mut XenStore,
        backend: &str,
        want: XenbusState,
        wait_micros: u64,
    ) -> Result<(), XenChannelError> {
        Self::wait_backend_checking(xs, backend, want, wait_micros, &mut NoCheck)
    }

    /// Waits for the back end to reach `want`, running `check` on every
    /// pass. A back end that gives up while we wait for Connected says
    /// Closing or Closed.
    fn wait_backend_checking(
        xs: &mut XenStore,
        backend: &str,
        want: XenbusState,
        wait_micros: u64,
        check: &mut dyn WaitCheck,
    ) -> Result<(), XenChannelError> {
        let start = now_micros();
        loop {
            let now = now_micros();
            check.check(now.saturating_sub(start));
            let seen = state_of(xs, backend)?;
            if seen == want {
                return Ok(());
            }
            if matches!(seen, XenbusState::Closed | XenbusState::Closing)
                && want == XenbusState::Connected
            {
                return Err(XenChannelError::BackendState { want, seen });
            }
            let waited = now.saturating_sub(start);
            if waited > wait_micros {
                return Err(XenChannelError::BackendTimeout {
                    want,
                    seen,
                    waited_ms: waited / 1000,
                });
            }
            wait_a_little(xs)?;
        }
    }

    /// The channel window (the guest's own granted RAM).
    pub fn window(&self) -> Window {
        self.window.clone()
    }

    /// The back end's doorbell: a notification on our event channel.
    pub fn bell(&self) -> XenBell {
        XenBell(self.port)
    }

    /// Notifications from the back end since the last call.
    pub fn take_interrupts(&self) -> u64 {
        events::take_count(self.port)
    }

    pub fn port(&self) -> u32 {
        self.port
    }

    pub fn backend_id(&self) -> u16 {
        self.backend_id
    }

    pub fn pages(&self) -> u32 {
        self.pages
    }

    /// Whether the back end left Connected (it closed the device, or a
    /// new back end re-created it); watch events are consumed.
    pub fn backend_state(&mut self) -> Option<XenbusState> {
        match self.xs.take_watch_event() {
            Ok(Some(_)) => state_of(&mut self.xs, &self.backend).ok(),
            _ => None,
        }
    }

    /// Tells the back end we are going (Closing, then Closed).
    pub fn close(&mut self) {
        let st = format!("{}/{}", self.frontend, node::STATE);
        let _ = self.xs.write(&st, b"5");
        let _ = self.xs.write(&st, b"6");
    }
}
