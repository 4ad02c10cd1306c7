//! IPVS's TCP connection states and transitions, as the director sees them.
//!
//! In DR and TUN the director sees only the client's packets, so the transitions are
//! IPVS's "INPUT-ONLY" table (net/netfilter/ipvs/ip_vs_proto_tcp.c).

pub const NONE: u8 = 0;
pub const ESTABLISHED: u8 = 1;
pub const SYN_SENT: u8 = 2;
pub const SYN_RECV: u8 = 3;
pub const FIN_WAIT: u8 = 4;
pub const TIME_WAIT: u8 = 5;
pub const CLOSE: u8 = 6;
pub const CLOSE_WAIT: u8 = 7;
pub const LAST_ACK: u8 = 8;
pub const LISTEN: u8 = 9;
pub const SYNACK: u8 = 10;
pub const STATE_COUNT: usize = 11;
/// Not a TCP state: the connection entry of a UDP flow.
pub const UDP: u8 = 11;

/// Names as `ipvsadm -L -c` prints them, indexed by state (UDP last).
pub const STATE_NAMES: [&str; STATE_COUNT + 1] = [
    "NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK",
    "LISTEN", "SYNACK", "UDP",
];

/// IPVS's default idle timeouts in seconds, indexed by state.
pub const DEFAULT_TIMEOUTS: [u32; STATE_COUNT] = [2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120];

pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_SYN: u8 = 0x02;
pub const FLAG_RST: u8 = 0x04;
pub const FLAG_ACK: u8 = 0x10;

const S_ES: u8 = ESTABLISHED;
const S_SS: u8 = SYN_SENT;
const S_SR: u8 = SYN_RECV;
const S_FW: u8 = FIN_WAIT;
const S_TW: u8 = TIME_WAIT;
const S_CL: u8 = CLOSE;
const S_CW: u8 = CLOSE_WAIT;
const S_LA: u8 = LAST_ACK;
const S_LI: u8 = LISTEN;

/// Next state by [event][state]; events: syn, fin, ack, rst.
const INPUT_ONLY: [[u8; STATE_COUNT]; 4] = [
    /*        sNO   sES   sSS   sSR   sFW   sTW   sCL   sCW   sLA   sLI   sSA */
    /*syn*/ [S_SR, S_ES, S_ES, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR],
    /*fin*/ [S_CL, S_FW, S_SS, S_TW, S_FW, S_TW, S_CL, S_CW, S_LA, S_LI, S_TW],
    /*ack*/ [S_CL, S_ES, S_SS, S_ES, S_FW, S_TW, S_CL, S_CW, S_CL, S_LI, S_ES],
    /*rst*/ [S_CL, S_CL, S_CL, S_SR, S_CL, S_CL, S_CL, S_CL, S_LA, S_LI, S_CL],
];

/// The state after a client packet with TCP `flags`, from `state`. Event priority as
/// IPVS: RST, then SYN, then FIN, then ACK; a packet with none keeps the state.
#[inline(always)]
pub fn next_state(state: u8, flags: u8) -> u8 {
    let event = if flags & FLAG_RST != 0 {
        3
    } else if flags & FLAG_SYN != 0 {
        0
    } else if flags & FLAG_FIN != 0 {
        1
    } else if flags & FLAG_ACK != 0 {
        2
    } else {
        return state;
    };
    let s = state as usize;
    if s >= STATE_COUNT {
        return state;
    }
    INPUT_ONLY[event][s]
}

/// Whether a connection in `state` counts as active (IPVS's ActiveConn) or inactive.
#[inline(always)]
pub const fn is_active(state: u8) -> bool {
    state == ESTABLISHED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_normal_connection_as_the_director_sees_it() {
        let mut s = NONE;
        s = next_state(s, FLAG_SYN);
        assert_eq!(s, SYN_RECV);
        s = next_state(s, FLAG_ACK);
        assert_eq!(s, ESTABLISHED);
        s = next_state(s, FLAG_ACK | 0x08);
        assert_eq!(s, ESTABLISHED);
        s = next_state(s, FLAG_FIN | FLAG_ACK);
        assert_eq!(s, FIN_WAIT);
        s = next_state(s, FLAG_ACK);
        assert_eq!(s, FIN_WAIT);
    }

    #[test]
    fn reset_closes_and_syn_restarts() {
        assert_eq!(next_state(ESTABLISHED, FLAG_RST | FLAG_ACK), CLOSE);
        assert_eq!(next_state(CLOSE, FLAG_SYN), SYN_RECV);
        // A RST during the handshake leaves SYN_RECV (IPVS's table).
        assert_eq!(next_state(SYN_RECV, FLAG_RST), SYN_RECV);
        // A stray ACK with no known handshake closes (current kernels).
        assert_eq!(next_state(NONE, FLAG_ACK), CLOSE);
        assert_eq!(next_state(ESTABLISHED, 0), ESTABLISHED);
        assert_eq!(next_state(UDP, FLAG_SYN), UDP);
    }

    #[test]
    fn only_established_is_active() {
        assert!(is_active(ESTABLISHED));
        assert!(!is_active(SYN_RECV) && !is_active(FIN_WAIT) && !is_active(UDP));
        assert_eq!(STATE_NAMES[UDP as usize], "UDP");
        assert_eq!(DEFAULT_TIMEOUTS[ESTABLISHED as usize], 900);
        assert_eq!(DEFAULT_TIMEOUTS[FIN_WAIT as usize], 120);
    }
}
