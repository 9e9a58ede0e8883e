//! Unicast paths through librdmacm: the attributes of an address handle to
//! another port, from rdma_cm's address and route resolution (and, for
//! the other kinds of destination, the attributes without a route:
//! [`gid_spec`], [`group_spec`]).
//!
//! A query is what rdma_cm's own datagram users do: an rdma_cm id in the
//! UDP port space, `rdma_resolve_addr` from the port's own address to the
//! destination's (see `cm_addr`: IPv6 or IPv4 on RoCE, a link-local IPv6
//! address scoped to the network device; `AF_IB` with the P_Key on
//! InfiniBand), then, on `ADDR_RESOLVED`, `rdma_resolve_route`. On
//! InfiniBand the route is the subnet administrator's PathRecord (the
//! destination's LID and SL); on RoCE the kernel resolves the neighbour and
//! the IP route. On `ROUTE_RESOLVED` the route's first path record becomes
//! the handle's attributes ([`spec_from_path`]).
//!
//! Nothing here waits: both calls return at once, and the answers arrive as
//! events on the port's rdma_cm channel (the one multicast joins use, in
//! the port's event set). `ADDR_ERROR`, `ROUTE_ERROR`, `UNREACHABLE` (or
//! any other event) end a query as unreachable; rdma_cm reports its own
//! timeout ([`PATH_TIMEOUT_MS`] for each step) as one of those, and a query
//! that has heard nothing after [`GIVE_UP`] is abandoned (checked whenever
//! the port is polled).
//!
//! One exception, in librdmacm rather than here: on a device whose
//! transport is InfiniBand (RoCE devices included), `rdma_resolve_route`
//! first asks the ibacm daemon for the path, synchronously over its socket
//! (`ucma_set_ib_route`, `rdma_getaddrinfo` with `RAI_ROUTEONLY`), and
//! only then the kernel. Where ibacm is not running (no socket) that costs
//! a failed `connect`; where it runs, the call waits for ibacm's answer.
//! Connected mode's `rdma_resolve_route` does the same.

use alloc::sync::Arc;
use core::fmt;
use std::io;
use std::time::{Duration, Instant};

use super::cm_addr::{AddrKind, CmAddr, RawSockaddr};
use super::config::LinkLayer;
use super::ffi::{AhSpec, CmChannel, CmEvent, CmId, Grh, GroupRoute, PathRecord, PortSpace};
use super::port::HOP_LIMIT;
use crate::types::Gid;

/// How long rdma_cm may take to resolve the address, and then the route.
pub(super) const PATH_TIMEOUT_MS: i32 = 2000;

/// A query still unanswered this long after it started is abandoned (a
/// backstop: rdma_cm reports its own timeouts well before).
pub(super) const GIVE_UP: Duration = Duration::from_millis(2 * PATH_TIMEOUT_MS as u64 + 1000);

/// Why a path could not be resolved (all of them are
/// `PathError::Unreachable` to the guest).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum PathFailure {
    /// A librdmacm call failed at once.
    Call { call: &'static str, errno: i32 },
    /// rdma_cm answered with an error event (its status is a negative
    /// errno, `-ETIMEDOUT` for a timeout).
    Event { event: &'static str, status: i32 },
    /// The route holds no path record.
    NoPath,
    /// The path record names LID 0 on InfiniBand.
    NoLid,
    /// The route leaves from another device port than the QP's.
    OtherPort { port: u8 },
    /// Nothing was heard for [`GIVE_UP`].
    TimedOut,
}

impl fmt::Display for PathFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PathFailure::Call { call, errno } => {
                write!(f, "{call} failed: {}", io::Error::from_raw_os_error(errno))
            }
            PathFailure::Event { event, status } => {
                write!(f, "{event}")?;
                if status < 0 {
                    write!(f, " ({})", io::Error::from_raw_os_error(-status))
                } else {
                    write!(f, " (status {status})")
                }
            }
            PathFailure::NoPath => f.write_str("the route holds no path record"),
            PathFailure::NoLid => f.write_str("the path record names LID 0"),
            PathFailure::OtherPort { port } => {
                write!(f, "the route leaves from port {port}, not the QP's")
            }
            PathFailure::TimedOut => write!(f, "no answer in {} ms", GIVE_UP.as_millis()),
        }
    }
}

/// What a query needs to know about its port.
pub(super) struct PathCm {
    channel: Arc<CmChannel>,
    kind: AddrKind,
    link_layer: LinkLayer,
    port: u8,
    gid_index: u8,
    /// The port's own address, where every query starts.
    src: RawSockaddr,
}

/// One path being resolved: its rdma_cm id (destroyed with it).
pub(super) struct PathQuery {
    id: CmId,
    dgid: Gid,
    started: Instant,
}

/// Where a query is after an event.
pub(super) enum Step {
    /// Waiting for the next event.
    Pending,
    /// Done: the handle's attributes, or why there are none.
    Done(Result<AhSpec, PathFailure>),
}

impl PathQuery {
    pub(super) fn dgid(&self) -> Gid {
        self.dgid
    }

    /// The key the query's events carry.
    pub(super) fn key(&self) -> usize {
        self.id.key()
    }

    /// Whether the query has run out of time at `now`.
    pub(super) fn expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.started) >= GIVE_UP
    }
}

impl PathCm {
    /// Queries of the port with `gid` (at `gid_index` of device port
    /// `port`), reporting on `channel`.
    pub(super) fn new(
        channel: Arc<CmChannel>,
        gid: Gid,
        kind: AddrKind,
        link_layer: LinkLayer,
        port: u8,
        gid_index: u8,
    ) -> PathCm {
        PathCm {
            channel,
            kind,
            link_layer,
            port,
            gid_index,
            src: CmAddr::udp_endpoint(gid, kind).encode(),
        }
    }

    /// Starts resolving the path to `dgid`.
    pub(super) fn start(&self, dgid: Gid) -> Result<PathQuery, PathFailure> {
        let id =
            CmId::create(&self.channel, PortSpace::Udp).map_err(|errno| PathFailure::Call {
                call: "rdma_create_id",
                errno,
            })?;
        let dst = CmAddr::udp_endpoint(dgid, self.kind).encode();
        id.resolve_addr(&self.src, &dst, PATH_TIMEOUT_MS)
            .map_err(|errno| PathFailure::Call {
                call: "rdma_resolve_addr",
                errno,
            })?;
        Ok(PathQuery {
            id,
            dgid,
            started: Instant::now(),
        })
    }

    /// Moves `query` on after `event` (one for its id).
    pub(super) fn advance(&self, query: &PathQuery, event: &CmEvent) -> Step {
        use rdma_sys::rdma_cm_event_type::{
            RDMA_CM_EVENT_ADDR_RESOLVED, RDMA_CM_EVENT_ROUTE_RESOLVED,
        };
        match event.kind {
            RDMA_CM_EVENT_ADDR_RESOLVED => match query.id.resolve_route(PATH_TIMEOUT_MS) {
                Ok(()) => Step::Pending,
                Err(errno) => Step::Done(Err(PathFailure::Call {
                    call: "rdma_resolve_route",
                    errno,
                })),
            },
            RDMA_CM_EVENT_ROUTE_RESOLVED => Step::Done(match query.id.route_path() {
                None => Err(PathFailure::NoPath),
                Some((_, port)) if port != self.port => Err(PathFailure::OtherPort { port }),
                Some((path, _)) => spec_from_path(
                    &path,
                    query.dgid,
                    self.link_layer,
                    self.port,
                    self.gid_index,
                ),
            }),
            kind => Step::Done(Err(PathFailure::Event {
                event: event_name(kind),
                status: event.status,
            })),
        }
    }
}

/// The address handle a path record describes, for a QP on `port` whose
/// GID is at `gid_index`: the record's DLID, SL and (InfiniBand) rate,
/// and a GRH to `dgid` with the record's hop limit, traffic class and flow
/// label.
///
/// On InfiniBand the GRH is there even when the record's hop limit says
/// the destination is on this subnet (where Linux's IPoIB leaves it out):
/// it costs no MTU on IB, and it gives the receiver the sender's GID,
/// which the back end's ARP and ND checks use. On RoCE it is required; a
/// hop limit of 0 there becomes [`HOP_LIMIT`], and the rate is the port's.
pub(super) fn spec_from_path(
    path: &PathRecord,
    dgid: Gid,
    link_layer: LinkLayer,
    port: u8,
    gid_index: u8,
) -> Result<AhSpec, PathFailure> {
    let grh = |hop_limit: u8| Grh {
        dgid: dgid.0,
        sgid_index: gid_index,
        hop_limit,
        traffic_class: path.traffic_class,
        flow_label: path.flow_label & 0x000f_ffff,
    };
    match link_layer {
        LinkLayer::InfiniBand => {
            if path.dlid == 0 {
                return Err(PathFailure::NoLid);
            }
            Ok(AhSpec {
                port,
                dlid: path.dlid,
                sl: path.sl,
                static_rate: path.rate,
                grh: Some(grh(path.hop_limit)),
            })
        }
        LinkLayer::Ethernet => Ok(AhSpec {
            port,
            dlid: 0,
            sl: path.sl,
            static_rate: 0,
            grh: Some(grh(match path.hop_limit {
                0 => HOP_LIMIT,
                h => h,
            })),
        }),
    }
}

/// The address handle to `dgid` on RoCE without a route (rdma_cm missing,
/// or a multicast group): a GRH to the GID with [`HOP_LIMIT`].
pub(super) fn gid_spec(dgid: Gid, port: u8, gid_index: u8) -> AhSpec {
    AhSpec {
        port,
        dlid: 0,
        sl: 0,
        static_rate: 0,
        grh: Some(Grh {
            dgid: dgid.0,
            sgid_index: gid_index,
            hop_limit: HOP_LIMIT,
            traffic_class: 0,
            flow_label: 0,
        }),
    }
}

/// The address handle to the multicast group `mgid` on InfiniBand, from
/// the answer to this port's join: the MLID, SL and rate, and a GRH to the
/// MGID with the group's hop limit, traffic class and flow label.
pub(super) fn group_spec(group: &GroupRoute, mgid: Gid, port: u8, gid_index: u8) -> AhSpec {
    AhSpec {
        port,
        dlid: group.mlid,
        sl: group.sl,
        static_rate: group.static_rate,
        grh: Some(Grh {
            dgid: mgid.0,
            sgid_index: gid_index,
            hop_limit: group.hop_limit,
            traffic_class: group.traffic_class,
            flow_label: group.flow_label & 0x000f_ffff,
        }),
    }
}

/// The name of an rdma_cm event type, for logs.
pub(super) fn event_name(kind: u32) -> &'static str {
    use rdma_sys::rdma_cm_event_type::*;
    match kind {
        RDMA_CM_EVENT_ADDR_RESOLVED => "ADDR_RESOLVED",
        RDMA_CM_EVENT_ADDR_ERROR => "ADDR_ERROR",
        RDMA_CM_EVENT_ROUTE_RESOLVED => "ROUTE_RESOLVED",
        RDMA_CM_EVENT_ROUTE_ERROR => "ROUTE_ERROR",
        RDMA_CM_EVENT_UNREACHABLE => "UNREACHABLE",
        RDMA_CM_EVENT_DEVICE_REMOVAL => "DEVICE_REMOVAL",
        RDMA_CM_EVENT_ADDR_CHANGE => "ADDR_CHANGE",
        RDMA_CM_EVENT_TIMEWAIT_EXIT => "TIMEWAIT_EXIT",
        _ => "an unexpected rdma_cm event",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> PathRecord {
        PathRecord {
            dgid: [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 2, 0xc9, 3, 0, 1, 2, 3],
            sgid: [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 2, 0xc9, 3, 0, 1, 2, 4],
            dlid: 0x2a,
            sl: 3,
            hop_limit: 0,
            traffic_class: 0x20,
            flow_label: 0xfff_ffff,
            rate: 7,
        }
    }

    #[test]
    fn infiniband_paths_give_the_lid_sl_and_rate_and_a_grh() {
        let path = record();
        let dgid = Gid(path.dgid);
        let spec = spec_from_path(&path, dgid, LinkLayer::InfiniBand, 1, 0).unwrap();
        assert_eq!(
            spec,
            AhSpec {
                port: 1,
                dlid: 0x2a,
                sl: 3,
                static_rate: 7,
                grh: Some(Grh {
                    dgid: dgid.0,
                    sgid_index: 0,
                    hop_limit: 0,
                    traffic_class: 0x20,
                    flow_label: 0xf_ffff,
                }),
            }
        );
        let routed = PathRecord {
            hop_limit: 4,
            ..path
        };
        let spec = spec_from_path(&routed, dgid, LinkLayer::InfiniBand, 2, 5).unwrap();
        let grh = spec.grh.unwrap();
        assert_eq!((spec.port, grh.sgid_index, grh.hop_limit), (2, 5, 4));
        let no_lid = PathRecord { dlid: 0, ..path };
        assert_eq!(
            spec_from_path(&no_lid, dgid, LinkLayer::InfiniBand, 1, 0),
            Err(PathFailure::NoLid)
        );
    }

    #[test]
    fn roce_paths_always_have_a_grh_and_a_hop_limit() {
        let path = PathRecord {
            dlid: 0,
            ..record()
        };
        let dgid = Gid(path.dgid);
        let spec = spec_from_path(&path, dgid, LinkLayer::Ethernet, 1, 1).unwrap();
        assert_eq!((spec.dlid, spec.sl, spec.static_rate), (0, 3, 0));
        let grh = spec.grh.unwrap();
        assert_eq!(grh.dgid, dgid.0);
        assert_eq!((grh.sgid_index, grh.hop_limit), (1, HOP_LIMIT));
        let one = PathRecord {
            hop_limit: 1,
            ..path
        };
        let spec = spec_from_path(&one, dgid, LinkLayer::Ethernet, 1, 1).unwrap();
        assert_eq!(spec.grh.map(|g| g.hop_limit), Some(1));
    }

    #[test]
    fn groups_on_infiniband_use_the_joins_mlid_and_grh_fields() {
        let mgid = Gid([
            0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
        ]);
        let group = GroupRoute {
            mlid: 0xc001,
            sl: 2,
            static_rate: 3,
            hop_limit: 0,
            traffic_class: 0x10,
            flow_label: 0x1234,
        };
        let spec = group_spec(&group, mgid, 1, 0);
        assert_eq!((spec.dlid, spec.sl, spec.static_rate), (0xc001, 2, 3));
        assert_eq!(
            spec.grh,
            Some(Grh {
                dgid: mgid.0,
                sgid_index: 0,
                hop_limit: 0,
                traffic_class: 0x10,
                flow_label: 0x1234,
            })
        );
        let roce = gid_spec(mgid, 1, 2);
        assert_eq!((roce.dlid, roce.sl), (0, 0));
        assert_eq!(
            roce.grh.map(|g| (g.dgid, g.sgid_index, g.hop_limit)),
            Some((mgid.0, 2, HOP_LIMIT))
        );
    }

    #[test]
    fn failures_say_what_happened() {
        let timeout = PathFailure::Event {
            event: "ADDR_ERROR",
            status: -libc::ETIMEDOUT,
        };
        let text = timeout.to_string();
        assert!(text.starts_with("ADDR_ERROR ("), "{text}");
        assert!(text.contains("timed out"), "{text}");
        assert_eq!(
            PathFailure::TimedOut.to_string(),
            format!("no answer in {} ms", GIVE_UP.as_millis())
        );
        assert_eq!(
            event_name(rdma_sys::rdma_cm_event_type::RDMA_CM_EVENT_ROUTE_ERROR),
            "ROUTE_ERROR"
        );
    }
}
