//! The ibguest channel's Xen device, `ibchan`: its xenstore nodes, the
//! grant directory, and validation of what a frontend publishes.
//!
//! ```text
//! /local/domain/<domid>/device/ibchan/0/           frontend (the guest owns it)
//!     backend      = /local/domain/<b>/backend/ibchan/<domid>/0   (back end)
//!     backend-id   = <b>                                          (back end)
//!     state        = XenbusState                                  (guest)
//!     protocol     = ibchan-1                                     (guest)
//!     window-pages = N          pages in the channel window       (guest)
//!     dir-pages    = D          ceil(N / 1024)                    (guest)
//!     dir-ref-<i>  = grant ref of directory page i, 0 <= i < D    (guest)
//!     event-channel = port, unbound, for domain <b>               (guest)
//! /local/domain/<b>/backend/ibchan/<domid>/0/      backend (the back end owns it)
//!     frontend     = /local/domain/<domid>/device/ibchan/0
//!     frontend-id  = <domid>
//!     seat         = the seat's name in ib-backend's configuration
//!     max-window-pages = the most pages the back end will map
//!     state        = XenbusState
//! ```
//!
//! Directory page `i` holds up to 1024 little-endian `u32` grant references:
//! entry `j` is window page `i * 1024 + j`. The guest grants directory pages
//! read-only and window pages read-write to the back-end domain.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::xenbus::parse_u32;

/// The device type under `device/` and `backend/`.
pub const DEVICE_TYPE: &str = "ibchan";
/// The one device index a guest uses.
pub const DEVICE_ID: u32 = 0;
/// The protocol string the frontend publishes.
pub const PROTOCOL: &str = "ibchan-1";
/// Grant references per directory page.
pub const REFS_PER_DIR_PAGE: u32 = 1024;
/// The most directory pages a frontend may publish (64 MiB of window).
pub const MAX_DIR_PAGES: u32 = 16;
/// Grant references below this are the toolstack's (console, xenstore):
/// a frontend never uses them for the channel.
pub const FIRST_FREE_GRANT_REF: u32 = 8;
/// Event-channel ports are below this with either ABI (FIFO: 2^17).
pub const PORT_LIMIT: u32 = 1 << 17;
/// Page size of the window and the directory.
pub const PAGE_SIZE: usize = 4096;

/// Node names.
pub mod node {
    pub const STATE: &str = "state";
    pub const BACKEND: &str = "backend";
    pub const BACKEND_ID: &str = "backend-id";
    pub const FRONTEND: &str = "frontend";
    pub const FRONTEND_ID: &str = "frontend-id";
    pub const PROTOCOL: &str = "protocol";
    pub const WINDOW_PAGES: &str = "window-pages";
    pub const DIR_PAGES: &str = "dir-pages";
    pub const EVENT_CHANNEL: &str = "event-channel";
    pub const SEAT: &str = "seat";
    pub const MAX_WINDOW_PAGES: &str = "max-window-pages";
}

/// `dir-ref-<i>`.
pub fn dir_ref_node(i: u32) -> String {
    format!("dir-ref-{i}")
}

/// The frontend directory of `domid`'s channel.
pub fn frontend_path(domid: u16) -> String {
    format!("/local/domain/{domid}/device/{DEVICE_TYPE}/{DEVICE_ID}")
}

/// The frontend directory, relative to the guest's home (what a guest
/// writes without knowing its domid).
pub fn frontend_relative() -> String {
    format!("device/{DEVICE_TYPE}/{DEVICE_ID}")
}

/// The backend directory for `domid`'s channel, served by `backend_domid`.
pub fn backend_path(backend_domid: u16, domid: u16) -> String {
    format!("/local/domain/{backend_domid}/backend/{DEVICE_TYPE}/{domid}/{DEVICE_ID}")
}

/// Directory pages for a window of `window_pages` pages.
pub fn dir_pages_for(window_pages: u32) -> u32 {
    window_pages.div_ceil(REFS_PER_DIR_PAGE)
}

/// Writes `refs` (at most [`REFS_PER_DIR_PAGE`]) into a directory page,
/// zero-filling the rest.
pub fn encode_dir_page(refs: &[u32], page: &mut [u8; PAGE_SIZE]) {
    page.fill(0);
    for (i, r) in refs.iter().take(REFS_PER_DIR_PAGE as usize).enumerate() {
        page[i * 4..i * 4 + 4].copy_from_slice(&r.to_le_bytes());
    }
}

/// What a frontend published, parsed and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontendPublication {
    pub window_pages: u32,
    pub dir_refs: Vec<u32>,
    pub event_channel: u32,
}

/// Why a frontend's publication is refused. Each names what to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrontendError {
    /// A node is absent.
    Missing(String),
    /// A node is not a decimal number.
    NotANumber(String),
    /// `protocol` is not [`PROTOCOL`].
    WrongProtocol,
    /// The window is larger than the back end maps, or empty.
    WindowSize { pages: u32, max: u32 },
    /// `dir-pages` does not match `window-pages`.
    DirPages { dir_pages: u32, want: u32 },
    /// A grant reference the toolstack reserves.
    ReservedRef { index: u32, gref: u32 },
    /// Port 0 or beyond [`PORT_LIMIT`].
    BadPort(u32),
}

impl fmt::Display for FrontendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrontendError::Missing(n) => write!(f, "node {n} is missing"),
            FrontendError::NotANumber(n) => write!(f, "node {n} is not a decimal number"),
            FrontendError::WrongProtocol => write!(f, "protocol is not {PROTOCOL}"),
            FrontendError::WindowSize { pages, max } => {
                write!(f, "window of {pages} pages (allowed 1..={max})")
            }
            FrontendError::DirPages { dir_pages, want } => {
                write!(f, "dir-pages {dir_pages}, but the window needs {want}")
            }
            FrontendError::ReservedRef { index, gref } => {
                write!(f, "grant ref {gref} at index {index} is reserved")
            }
            FrontendError::BadPort(p) => write!(f, "event channel {p} is out of range"),
        }
    }
}

impl core::error::Error for FrontendError {}

impl FrontendPublication {
    /// Reads and checks a frontend's nodes; `read(node)` returns a node's
    /// value relative to the frontend directory, if it exists. The values
    /// are read once each.
    pub fn parse(
        mut read: impl FnMut(&str) -> Option<Vec<u8>>,
        max_window_pages: u32,
    ) -> Result<FrontendPublication, FrontendError> {
        let mut number = |name: &str| -> Result<u32, FrontendError> {
            let v = read(name).ok_or_else(|| FrontendError::Missing(String::from(name)))?;
            parse_u32(&v).ok_or_else(|| FrontendError::NotANumber(String::from(name)))
        };
        let window_pages = number(node::WINDOW_PAGES)?;
        let max = max_window_pages.min(MAX_DIR_PAGES * REFS_PER_DIR_PAGE);
        if window_pages == 0 || window_pages > max {
            return Err(FrontendError::WindowSize {
                pages: window_pages,
                max,
            });
        }
        let want = dir_pages_for(window_pages);
        let dir_pages = number(node::DIR_PAGES)?;
        if dir_pages != want {
            return Err(FrontendError::DirPages { dir_pages, want });
        }
        let mut dir_refs = Vec::with_capacity(want as usize);
        for i in 0..want {
            let gref = number(&dir_ref_node(i))?;
            if gref < FIRST_FREE_GRANT_REF {
                return Err(FrontendError::ReservedRef { index: i, gref });
            }
            dir_refs.push(gref);
        }
        let event_channel = number(node::EVENT_CHANNEL)?;
        if event_channel == 0 || event_channel >= PORT_LIMIT {
            return Err(FrontendError::BadPort(event_channel));
        }
        match read(node::PROTOCOL) {
            Some(p) if trim_nul(&p) == PROTOCOL.as_bytes() => {}
            Some(_) => return Err(FrontendError::WrongProtocol),
            None => return Err(FrontendError::Missing(String::from(node::PROTOCOL))),
        }
        Ok(FrontendPublication {
            window_pages,
            dir_refs,
            event_channel,
        })
    }

    /// The window's grant references from the directory pages (copied out
    /// of shared memory by the caller, once). Every reference is checked;
    /// too few pages for the window is [`FrontendError::DirPages`].
    pub fn window_refs(&self, dir: &[[u8; PAGE_SIZE]]) -> Result<Vec<u32>, FrontendError> {
        let want = dir_pages_for(self.window_pages);
        if dir.len() < want as usize {
            return Err(FrontendError::DirPages {
                dir_pages: dir.len() as u32,
                want,
            });
        }
        let mut refs = Vec::with_capacity(self.window_pages as usize);
        for i in 0..self.window_pages {
            let page = &dir[(i / REFS_PER_DIR_PAGE) as usize];
            let at = (i % REFS_PER_DIR_PAGE) as usize * 4;
            let gref = u32::from_le_bytes([page[at], page[at + 1], page[at + 2], page[at + 3]]);
            if gref < FIRST_FREE_GRANT_REF {
                return Err(FrontendError::ReservedRef { index: i, gref });
            }
            refs.push(gref);
        }
        Ok(refs)
    }
}

fn trim_nul(v: &[u8]) -> &[u8] {
    match v.iter().position(|&b| b == 0) {
        Some(i) => &v[..i],
        None => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn nodes(pairs: &[(&str, &str)]) -> HashMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (String::from(*k), v.as_bytes().to_vec()))
            .collect()
    }

    fn good() -> HashMap<String, Vec<u8>> {
        nodes(&[
            ("window-pages", "1030"),
            ("dir-pages", "2"),
            ("dir-ref-0", "100"),
            ("dir-ref-1", "101"),
            ("event-channel", "5"),
            ("protocol", "ibchan-1"),
        ])
    }

    #[test]
    fn paths() {
        assert_eq!(frontend_path(3), "/local/domain/3/device/ibchan/0");
        assert_eq!(backend_path(0, 3), "/local/domain/0/backend/ibchan/3/0");
        assert_eq!(dir_pages_for(1024), 1);
        assert_eq!(dir_pages_for(1025), 2);
    }

    #[test]
    fn publication_parses_and_refs_decode() {
        let n = good();
        let p = FrontendPublication::parse(|k| n.get(k).cloned(), 2048).unwrap();
        assert_eq!(p.dir_refs, [100, 101]);
        assert_eq!(p.event_channel, 5);
        let mut pages = [[0u8; PAGE_SIZE]; 2];
        let refs: Vec<u32> = (0..1030).map(|i| 200 + i).collect();
        encode_dir_page(&refs[..1024], &mut pages[0]);
        encode_dir_page(&refs[1024..], &mut pages[1]);
        assert_eq!(p.window_refs(&pages).unwrap(), refs);
        assert_eq!(
            p.window_refs(&pages[..1]),
            Err(FrontendError::DirPages {
                dir_pages: 1,
                want: 2
            })
        );
        pages[1][4] = 1;
        pages[1][5] = 0;
        pages[1][6] = 0;
        pages[1][7] = 0;
        assert_eq!(
            p.window_refs(&pages),
            Err(FrontendError::ReservedRef {
                index: 1025,
                gref: 1
            })
        );
    }

    #[test]
    fn publication_errors_name_the_node() {
        let check = |change: &[(&str, Option<&str>)], max: u32| {
            let mut n = good();
            for (k, v) in change {
                match v {
                    Some(v) => n.insert(String::from(*k), v.as_bytes().to_vec()),
                    None => n.remove(*k),
                };
            }
            FrontendPublication::parse(|k| n.get(k).cloned(), max).unwrap_err()
        };
        assert_eq!(
            check(&[], 1000),
            FrontendError::WindowSize {
                pages: 1030,
                max: 1000
            }
        );
        assert_eq!(
            check(&[("event-channel", None)], 4096),
            FrontendError::Missing(String::from("event-channel"))
        );
        assert_eq!(
            check(&[("dir-pages", Some("1"))], 4096),
            FrontendError::DirPages {
                dir_pages: 1,
                want: 2
            }
        );
        assert_eq!(
            check(&[("event-channel", Some("0"))], 4096),
            FrontendError::BadPort(0)
        );
        assert_eq!(
            check(&[("event-channel", Some("-3"))], 4096),
            FrontendError::NotANumber(String::from("event-channel"))
        );
        assert_eq!(
            check(&[("dir-ref-1", Some("7"))], 4096),
            FrontendError::ReservedRef { index: 1, gref: 7 }
        );
        assert_eq!(
            check(&[("protocol", Some("ibchan-2"))], 4096),
            FrontendError::WrongProtocol
        );
        assert_eq!(
            check(&[("window-pages", Some("0"))], 4096),
            FrontendError::WindowSize {
                pages: 0,
                max: 4096
            }
        );
    }
}
