//! Building and reading the bodies of link messages: native-order `u32`s
//! and raw bytes, every read checked against the body's length.

use std::io;

use super::invalid;

/// A body being built.
#[derive(Default)]
pub struct Body(Vec<u8>);

impl Body {
    pub fn new() -> Body {
        Body(Vec::new())
    }

    pub fn u32(&mut self, v: u32) -> &mut Body {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }

    pub fn raw(&mut self, bytes: &[u8]) -> &mut Body {
        self.0.extend_from_slice(bytes);
        self
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Reads a received body front to back.
pub struct BodyReader<'a> {
    rest: &'a [u8],
}

impl<'a> BodyReader<'a> {
    pub fn new(body: &'a [u8]) -> BodyReader<'a> {
        BodyReader { rest: body }
    }

    pub fn u32(&mut self) -> io::Result<u32> {
        let Some((word, rest)) = self.rest.split_first_chunk::<4>() else {
            return Err(invalid("handoff body too short"));
        };
        self.rest = rest;
        Ok(u32::from_ne_bytes(*word))
    }

    /// A domain id, which the link carries as a `u32`.
    pub fn domid(&mut self) -> io::Result<u16> {
        let v = self.u32()?;
        u16::try_from(v).map_err(|_| invalid(format!("domid {v} in a handoff")))
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// Checks that the whole body was read.
    pub fn finish(self) -> io::Result<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(invalid(format!(
                "{} unexpected bytes at the end of a handoff body",
                self.rest.len()
            )))
        }
    }
}
