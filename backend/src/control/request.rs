//! Reading one control request (a line) from a client that may be hostile:
//! at most [`MAX_REQUEST`] bytes, within one deadline for the whole line
//! (not per read, so trickling a byte at a time does not help), and never
//! blocking whatever the socket's flags (`MSG_DONTWAIT`, then `poll`).

use std::fmt;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, MsgFlags};

/// The longest request line, newline included.
pub const MAX_REQUEST: usize = 4096;
/// How long a client may take to send its whole request.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(1);

/// Why no request was read.
#[derive(Debug, PartialEq, Eq)]
pub enum RequestError {
    /// More than [`MAX_REQUEST`] bytes without a newline.
    TooLong,
    /// The deadline passed first.
    TimedOut,
    /// The client closed without sending anything.
    Empty,
    /// The socket failed.
    Socket(Errno),
    /// The line is not UTF-8.
    NotText,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::TooLong => write!(f, "request longer than {MAX_REQUEST} bytes"),
            RequestError::TimedOut => write!(
                f,
                "request not complete within {} ms",
                REQUEST_DEADLINE.as_millis()
            ),
            RequestError::Empty => f.write_str("no request"),
            RequestError::Socket(e) => write!(f, "socket error: {e}"),
            RequestError::NotText => f.write_str("request is not UTF-8 text"),
        }
    }
}

impl std::error::Error for RequestError {}

/// Reads one line (without its newline) before `deadline`. A client that
/// closes after a partial line has sent that line.
pub fn read_line(stream: &UnixStream, deadline: Instant) -> Result<String, RequestError> {
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    loop {
        if let Some(end) = buf[..len].iter().position(|&b| b == b'\n') {
            return text(&buf[..end]);
        }
        if len == buf.len() {
            return Err(RequestError::TooLong);
        }
        match recv(stream.as_raw_fd(), &mut buf[len..], MsgFlags::MSG_DONTWAIT) {
            Ok(0) if len == 0 => return Err(RequestError::Empty),
            Ok(0) => return text(&buf[..len]),
            Ok(n) => len += n,
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => wait_readable(stream, deadline)?,
            Err(e) => return Err(RequestError::Socket(e)),
        }
    }
}

fn text(bytes: &[u8]) -> Result<String, RequestError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| RequestError::NotText)
}

fn wait_readable(stream: &UnixStream, deadline: Instant) -> Result<(), RequestError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(RequestError::TimedOut);
        }
        let millis = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) => {}
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(RequestError::Socket(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(300)
    }

    #[test]
    fn a_line_is_read_without_its_newline() {
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"stats\nmore").unwrap();
        assert_eq!(read_line(&a, soon()).unwrap(), "stats");
    }

    #[test]
    fn a_line_without_newline_ends_at_close() {
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"stats").unwrap();
        drop(b);
        assert_eq!(read_line(&a, soon()).unwrap(), "stats");
    }

    #[test]
    fn a_huge_line_is_refused_after_the_cap() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            let chunk = [b'x'; 4096];
            // Until the reader gives up and closes.
            while b.write_all(&chunk).is_ok() {}
        });
        assert_eq!(read_line(&a, soon()), Err(RequestError::TooLong));
        drop(a);
        writer.join().unwrap();
    }

    #[test]
    fn a_trickling_or_silent_client_runs_out_of_time() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let started = Instant::now();
        let writer = std::thread::spawn(move || {
            for _ in 0..20 {
                if b.write_all(b"s").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        assert_eq!(read_line(&a, soon()), Err(RequestError::TimedOut));
        assert!(started.elapsed() < Duration::from_millis(600));
        drop(a);
        writer.join().unwrap();
    }
}
