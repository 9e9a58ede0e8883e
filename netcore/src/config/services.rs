//! Which services the guest runs: `services=echo,http`, `services=none`.

use core::fmt;

use super::error::{ConfigError, ServicesProblem};

/// The services [`crate::ServiceHost`] starts. The default is all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Services {
    /// UDP and TCP echo on port 7 (RFC 862).
    pub echo: bool,
    /// The HTTP status page on port 80.
    pub http: bool,
    /// TCP discard on port 9 (RFC 863).
    pub discard: bool,
    /// TCP chargen on port 19 (RFC 864).
    pub chargen: bool,
}

/// The service names in the order `Display` writes them.
pub const SERVICE_NAMES: [&str; 4] = ["echo", "http", "discard", "chargen"];

impl Services {
    pub const ALL: Services = Services {
        echo: true,
        http: true,
        discard: true,
        chargen: true,
    };
    pub const NONE: Services = Services {
        echo: false,
        http: false,
        discard: false,
        chargen: false,
    };

    fn flags(&self) -> [bool; 4] {
        [self.echo, self.http, self.discard, self.chargen]
    }

    fn flag_mut(&mut self, name: &str) -> Option<&mut bool> {
        match name {
            "echo" => Some(&mut self.echo),
            "http" => Some(&mut self.http),
            "discard" => Some(&mut self.discard),
            "chargen" => Some(&mut self.chargen),
            _ => None,
        }
    }

    /// True if no service is enabled.
    pub fn is_none(&self) -> bool {
        *self == Services::NONE
    }

    /// Parses the value of `services=`: `none`, or a comma-separated list of
    /// distinct names from [`SERVICE_NAMES`].
    pub fn parse(value: &str) -> Result<Services, ConfigError> {
        let fail = |problem| ConfigError::BadServices {
            value: value.into(),
            problem,
        };
        if value == "none" {
            return Ok(Services::NONE);
        }
        let mut services = Services::NONE;
        for name in value.split(',') {
            if name.is_empty() {
                return Err(fail(ServicesProblem::Empty));
            }
            if name == "none" {
                return Err(fail(ServicesProblem::NoneNotAlone));
            }
            let Some(flag) = services.flag_mut(name) else {
                return Err(fail(ServicesProblem::Unknown(name.into())));
            };
            if *flag {
                return Err(fail(ServicesProblem::Repeated(name.into())));
            }
            *flag = true;
        }
        Ok(services)
    }
}

impl Default for Services {
    fn default() -> Self {
        Services::ALL
    }
}

impl fmt::Display for Services {
    /// `echo,http,discard,chargen` (the enabled ones, in that order) or
    /// `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_none() {
            return f.write_str("none");
        }
        let mut first = true;
        for (name, on) in SERVICE_NAMES.iter().zip(self.flags()) {
            if on {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}
