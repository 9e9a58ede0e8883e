//! A Linux TAP interface: Ethernet frames in and out through /dev/net/tun.
//! The one `ioctl` lives here.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::process::Command;

const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const IFNAMSIZ: usize = 16;

/// `struct ifreq` with the flags member, as TUNSETIFF reads it.
#[repr(C)]
pub struct IfReq {
    name: [u8; IFNAMSIZ],
    flags: i16,
    _pad: [u8; 22],
}

nix::ioctl_write_ptr_bad!(
    tun_set_iff,
    nix::request_code_write!(b'T', 202, std::mem::size_of::<i32>()),
    IfReq
);

pub struct Tap {
    file: File,
    pub name: String,
}

impl Tap {
    /// Creates (or attaches to) TAP interface `name`.
    pub fn create(name: &str) -> io::Result<Tap> {
        if name.is_empty() || name.len() >= IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not an interface name"),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot open /dev/net/tun: {e} (is the tun module loaded?)"),
                )
            })?;
        let mut req = IfReq {
            name: [0; IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads one `struct ifreq` from the pointer, which
        // points at `req`, a properly laid out and initialised IfReq that
        // outlives the call; the descriptor is the tun device we just opened.
        let result = unsafe { tun_set_iff(file.as_raw_fd(), &req) };
        match result {
            Ok(_) => {}
            Err(nix::errno::Errno::EPERM) => {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "creating TAP {name} needs CAP_NET_ADMIN: run ib-backend as root, or \
                         `setcap cap_net_admin+ep` it, or leave out --gateway"
                    ),
                ))
            }
            Err(e) => return Err(io::Error::other(format!("TUNSETIFF {name}: {e}"))),
        }
        let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(flags))?;
        Ok(Tap {
            file,
            name: name.to_owned(),
        })
    }

    /// Brings the link up with `mtu` and gives Linux `address/prefix` on it.
    pub fn configure(&self, address: std::net::Ipv4Addr, prefix: u8, mtu: usize) -> io::Result<()> {
        self.ip(&["link", "set", "dev", &self.name, "mtu", &mtu.to_string()])?;
        self.ip(&[
            "addr",
            "add",
            &format!("{address}/{prefix}"),
            "dev",
            &self.name,
        ])?;
        self.ip(&["link", "set", "dev", &self.name, "up"])
    }

    /// Gives Linux the IPv6 `address/prefix` on the link, without duplicate
    /// address detection (the gateway's own device holds the address on the
    /// fabric; nobody else may).
    pub fn configure6(&self, address: std::net::Ipv6Addr, prefix: u8) -> io::Result<()> {
        self.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{address}/{prefix}"),
            "dev",
            &self.name,
            "nodad",
        ])
    }

    /// Runs `ip ARGS`; an address that is already there is no error.
    fn ip(&self, args: &[&str]) -> io::Result<()> {
        let run = |args: &[&str]| -> io::Result<()> {
            let out = Command::new("ip").args(args).output().map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot run `ip` (iproute2) to configure {}: {e}", self.name),
                )
            })?;
            let err = String::from_utf8_lossy(&out.stderr);
            if out.status.success()
                || err.contains("File exists")
                || err.contains("already assigned")
            {
                Ok(())
            } else {
                Err(io::Error::other(format!(
                    "ip {}: {}",
                    args.join(" "),
                    err.trim()
                )))
            }
        };
        run(args)
    }

    /// One frame, or `Ok(None)` if none is waiting.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self.file.read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn write(&mut self, frame: &[u8]) -> io::Result<()> {
        match self.file.write(frame) {
            Ok(_) => Ok(()),
            // The interface is down or its queue full: the frame is dropped,
            // as a NIC would drop it.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
