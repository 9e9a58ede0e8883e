//! The channel a hosted guest asks for: its slot and ring parameters, and
//! the big-slot pool when the configuration asks for connected mode
//! (`cm=`, `docs/connected-mode.md`).

use netcore::NetConfig;
use ring::{BigParams, LayoutParams};

/// The window `ib-backend` gives a seat unless told otherwise
/// (`--guest ...,window=`): every channel here must fit in it.
pub const DEFAULT_BACKEND_WINDOW: usize = 8 << 20;

/// Datagram mode: 256 TX and 1024 RX slots of 4 KiB (5 MiB of buffers,
/// within the back end's default 8 MiB window), rings as large as the slot
/// counts. The RX slots bound the TCP window
/// (`netcore::services::tcp_window`: 1.5 MiB here); from 256 to 1024 took
/// a hashed 256 MiB transfer between two hosted guests from 450–470 to
/// 650–990 MB/s (alternating runs on a loaded machine).
pub const PARAMS: LayoutParams = LayoutParams {
    ctrl_order: 4,
    tx_order: 8,
    rx_order: 10,
    tx_slots: 256,
    rx_slots: 1024,
    slot_size: 4096,
};

/// Connected mode: the big-slot pool is [`BigParams::DEFAULT`] (16 TX and
/// 32 RX slots of 64 KiB, 3 MiB). To stay within the default 8 MiB window
/// the small TX slots go down to 128 (only packets up to the datagram MTU
/// use them: ACKs, ARP, small segments); the 1024 RX slots, and so the TCP
/// window, stay. The TX and RX rings double, since the big slots travel on
/// them too (`FrontHca::attach_with` refuses smaller rings).
pub const CM_PARAMS: LayoutParams = LayoutParams {
    ctrl_order: 4,
    tx_order: 9,
    rx_order: 11,
    tx_slots: 128,
    rx_slots: 1024,
    slot_size: 4096,
};

/// The big-slot pool asked for in connected mode.
pub const CM_BIG: BigParams = BigParams::DEFAULT;

/// What to ask the back end for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Channel {
    pub params: LayoutParams,
    /// The big-slot pool: `Some` asks for connected mode (granted only if
    /// the back end offers it and the window holds the layout).
    pub big: Option<BigParams>,
}

impl Channel {
    /// The channel for `net`: connected mode's when `cm=` asks for it.
    pub fn for_config(net: &NetConfig) -> Channel {
        match net.connected_mtu {
            Some(_) => Channel {
                params: CM_PARAMS,
                big: Some(CM_BIG),
            },
            None => Channel {
                params: PARAMS,
                big: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use ring::Layout;

    use super::*;

    fn net(s: &str) -> NetConfig {
        NetConfig::parse(s).unwrap()
    }

    #[test]
    fn datagram_mode_is_todays_channel() {
        let c = Channel::for_config(&net("ip=10.77.0.1/24"));
        assert_eq!(
            c,
            Channel {
                params: PARAMS,
                big: None
            }
        );
        assert!(Layout::window_len_for(PARAMS).unwrap() <= DEFAULT_BACKEND_WINDOW);
    }

    #[test]
    fn connected_mode_fits_the_default_window_with_room_on_the_rings() {
        let c = Channel::for_config(&net("ip=10.77.0.1/24 cm=on"));
        let big = c.big.unwrap();
        let len = Layout::window_len_with(c.params, Some(big)).unwrap();
        assert!(len <= DEFAULT_BACKEND_WINDOW, "{len}");
        Layout::compute_with(c.params, Some(big), DEFAULT_BACKEND_WINDOW).unwrap();
        assert!(1u32 << c.params.tx_order >= u32::from(c.params.tx_slots + big.tx_slots));
        assert!(1u32 << c.params.rx_order >= u32::from(c.params.rx_slots + big.rx_slots));
        // The 64 KiB slots carry the default connected MTU and its header.
        assert!(big.slot_size >= 65520 + 4);
        // The TCP window is the same as in datagram mode.
        assert_eq!(c.params.rx_slots, PARAMS.rx_slots);
        let c = Channel::for_config(&net("ip=10.77.0.1/24 cm=9000"));
        assert_eq!(c.big, Some(CM_BIG));
    }
}
