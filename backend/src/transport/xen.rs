//! The Xen transport: a domain's channel window, mapped from its grants
//! with gntdev, and its event channel, bound with evtchn.
//!
//! The supervisor has already read and checked the frontend's xenstore
//! nodes ([`FrontendPublication`]). Here, in the worker:
//! 1. the grant directory pages are mapped read-only, copied out once and
//!    unmapped; every window reference in the copy is checked
//!    ([`FrontendPublication::window_refs`]);
//! 2. all window references are mapped read-write in one request, as one
//!    contiguous region, which becomes the session's [`Window`];
//! 3. the guest's unbound port is bound to a local one.
//!
//! A reference the guest did not grant (or granted read-only), a port that
//! is not waiting for us, or a window over the limit fails that step with
//! an error that names it; the caller disconnects that guest only.

use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Weak};

use ring::Window;
use xen_proto::ibchan::{dir_pages_for, FrontendError, FrontendPublication, PAGE_SIZE};

use super::{GuestNotifier, Transport};

mod evtchn;
mod gntdev;
#[allow(unsafe_code)]
mod sys;

use evtchn::EventChannel;
use gntdev::GrantDevice;
use sys::{Access, GrantRegion};

/// Why a Xen guest's window or channel could not be set up.
#[derive(Debug)]
pub enum XenConnectError {
    /// `/dev/xen/gntdev` cannot be opened (not dom0, driver missing).
    GrantDevice(io::Error),
    /// The directory's refs do not fit the window (a link bug).
    Inconsistent { window_pages: u32, dir_pages: usize },
    /// The directory pages could not be mapped read-only.
    DirectoryMap { refs: Vec<u32>, error: io::Error },
    /// A window reference in the directory is bad.
    Directory(FrontendError),
    /// The window could not be mapped read-write.
    WindowMap { pages: u32, error: io::Error },
    /// The event channel could not be bound.
    EventChannel { port: u32, error: io::Error },
}

impl fmt::Display for XenConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XenConnectError::GrantDevice(e) => write!(f, "{e}"),
            XenConnectError::Inconsistent {
                window_pages,
                dir_pages,
            } => write!(
                f,
                "{dir_pages} directory pages for a window of {window_pages} pages"
            ),
            XenConnectError::DirectoryMap { refs, error } => write!(
                f,
                "cannot map its grant directory (refs {refs:?}) read-only: {error}"
            ),
            XenConnectError::Directory(e) => write!(f, "its grant directory is bad: {e}"),
            XenConnectError::WindowMap { pages, error } => write!(
                f,
                "cannot map its {pages}-page window read-write (a ref not granted to us, or granted read-only?): {error}"
            ),
            XenConnectError::EventChannel { port, error } => {
                write!(f, "cannot bind its event channel {port}: {error}")
            }
        }
    }
}

impl std::error::Error for XenConnectError {}

/// A Xen domain's mapped window and bound event channel.
pub struct XenTransport {
    domid: u16,
    pages: u32,
    window: Window,
    /// To tell, at release, whether the mapping is really gone.
    region: Weak<GrantRegion>,
    channel: Arc<EventChannel>,
}

impl XenTransport {
    /// Maps what `domid` published and binds its event channel.
    pub fn connect(
        domid: u16,
        publication: &FrontendPublication,
    ) -> Result<XenTransport, XenConnectError> {
        let want = dir_pages_for(publication.window_pages) as usize;
        if publication.window_pages == 0 || publication.dir_refs.len() != want {
            return Err(XenConnectError::Inconsistent {
                window_pages: publication.window_pages,
                dir_pages: publication.dir_refs.len(),
            });
        }
        let device = GrantDevice::open().map_err(XenConnectError::GrantDevice)?;
        let read_directory = || -> Result<Vec<[u8; PAGE_SIZE]>, XenConnectError> {
            let directory = device
                .map(domid, &publication.dir_refs, Access::ReadOnly)
                .map_err(|error| XenConnectError::DirectoryMap {
                    refs: publication.dir_refs.clone(),
                    error,
                })?;
            Ok(directory.copy_pages())
        };
        let dir_pages = read_directory()?;
        let refs = match publication.window_refs(&dir_pages) {
            Ok(refs) => refs,
            Err(e) => {
                // A directory a guest wrote has references from 8 up. Map
                // and read it once more, for the log: the same bytes again
                // mean the guest's page holds them (it overwrote or freed
                // it); different ones, that the first read was not what the
                // guest had written. The guest is refused either way: its
                // directory must not change once published.
                let again = read_directory();
                let second = match &again {
                    Ok(pages) => format!("{:?}", first_words(pages)),
                    Err(e) => format!("unreadable ({e})"),
                };
                let same = matches!(&again, Ok(p) if *p == dir_pages);
                log::warn!(
                    "xen: domain {domid}: directory refs {:?} held {:?} in their first words; read again: {second} ({})",
                    publication.dir_refs,
                    first_words(&dir_pages),
                    if same { "the same pages" } else { "the pages differ" }
                );
                return Err(XenConnectError::Directory(e));
            }
        };
        let region = Arc::new(
            device
                .map(domid, &refs, Access::ReadWrite)
                .map_err(|error| XenConnectError::WindowMap {
                    pages: publication.window_pages,
                    error,
                })?,
        );
        let window = region.window().ok_or_else(|| XenConnectError::WindowMap {
            pages: publication.window_pages,
            error: io::Error::other("mapped read-only"),
        })?;
        let channel = EventChannel::bind(domid, publication.event_channel).map_err(|error| {
            XenConnectError::EventChannel {
                port: publication.event_channel,
                error,
            }
        })?;
        log::info!(
            "xen: domain {domid}: mapped {} grant pages ({} directory page(s) read), event channel {} bound as local port {}",
            region.pages(),
            want,
            channel.remote_port(),
            channel.local_port()
        );
        Ok(XenTransport {
            domid,
            pages: region.pages(),
            window,
            region: Arc::downgrade(&region),
            channel: Arc::new(channel),
        })
    }
}

/// The first eight `u32` words of the first page, for the log.
fn first_words(pages: &[[u8; PAGE_SIZE]]) -> Vec<u32> {
    pages
        .first()
        .map(|p| {
            p.chunks_exact(4)
                .take(8)
                .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
                .collect()
        })
        .unwrap_or_default()
}

impl Transport for XenTransport {
    fn window(&self) -> Window {
        self.window.clone()
    }

    fn notifier(&self) -> GuestNotifier {
        self.channel.clone()
    }

    fn event_fd(&self) -> BorrowedFd<'_> {
        self.channel.fd()
    }

    fn drain_events(&mut self) -> io::Result<u64> {
        self.channel.drain()
    }

    fn rearm(&mut self) {
        if let Err(e) = self.channel.unmask() {
            log::warn!(
                "domain {}: cannot unmask local port {}: {e}",
                self.domid,
                self.channel.local_port()
            );
        }
    }

    fn xen_domid(&self) -> Option<u16> {
        Some(self.domid)
    }

    fn describe(&self) -> String {
        format!(
            "xen domain {}: {} grant pages, event channel {} (local port {})",
            self.domid,
            self.pages,
            self.channel.remote_port(),
            self.channel.local_port()
        )
    }

    fn release(self: Box<Self>) -> String {
        let XenTransport {
            pages,
            window,
            region,
            channel,
            ..
        } = *self;
        drop(window);
        let mapping = if region.strong_count() == 0 {
            format!("{pages} grant pages unmapped")
        } else {
            format!("{pages} grant pages still referenced (unmapped when the last user goes)")
        };
        let (remote, local) = (channel.remote_port(), channel.local_port());
        let binding = if Arc::strong_count(&channel) == 1 {
            format!("event channel {remote} (local port {local}) unbound")
        } else {
            format!("event channel {remote} (local port {local}) still referenced")
        };
        drop(channel);
        format!("{mapping}, {binding}")
    }
}
