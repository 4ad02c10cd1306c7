//! IPVS's TCP connection states and transitions, as the director sees them
//! (net/netfilter/ipvs/ip_vs_proto_tcp.c).
//!
//! In DR and TUN the director sees only the client's packets: IPVS's INPUT-ONLY table.
//! In NAT it sees both directions: the client's packets go through the INPUT table and
//! the real server's replies through the OUTPUT table.

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
/// Not a state: an entry its remover has claimed (the fast path swaps the state to this
/// first, so that exactly one CPU removes the entry and takes it off the counts). No
/// packet moves it any more, and it is gone a moment later.
pub const GONE: u8 = 0xff;

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

/// Which transition table a packet goes through ([`next_state`]'s `dir`).
pub mod dir {
    /// A client packet of a connection whose replies the director also sees (NAT).
    pub const INPUT: u8 = 0;
    /// A real server's reply (NAT).
    pub const OUTPUT: u8 = 1;
    /// A client packet of a connection whose replies bypass the director (DR, TUN).
    pub const INPUT_ONLY: u8 = 2;
}

/// Next state by [direction][event][state]; events: syn, fin, ack, rst.
const TABLES: [[[u8; STATE_COUNT]; 4]; 3] = [
    // INPUT
    [
        /*        sNO   sES   sSS   sSR   sFW   sTW   sCL   sCW   sLA   sLI   sSA */
        /*syn*/ [S_SR, S_ES, S_ES, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR],
        /*fin*/ [S_CL, S_CW, S_SS, S_TW, S_TW, S_TW, S_CL, S_CW, S_LA, S_LI, S_TW],
        /*ack*/ [S_CL, S_ES, S_SS, S_ES, S_FW, S_TW, S_CL, S_CW, S_CL, S_LI, S_ES],
        /*rst*/ [S_CL, S_CL, S_CL, S_SR, S_CL, S_CL, S_CL, S_CL, S_LA, S_LI, S_SR],
    ],
    // OUTPUT
    [
        /*        sNO   sES   sSS   sSR   sFW   sTW   sCL   sCW   sLA   sLI   sSA */
        /*syn*/ [S_SS, S_ES, S_SS, S_SR, S_SS, S_SS, S_SS, S_SS, S_SS, S_LI, S_SR],
        /*fin*/ [S_TW, S_FW, S_SS, S_TW, S_FW, S_TW, S_CL, S_TW, S_LA, S_LI, S_TW],
        /*ack*/ [S_ES, S_ES, S_SS, S_ES, S_FW, S_TW, S_CL, S_CW, S_LA, S_ES, S_ES],
        /*rst*/ [S_CL, S_CL, S_SS, S_CL, S_CL, S_TW, S_CL, S_CL, S_CL, S_CL, S_CL],
    ],
    // INPUT-ONLY
    [
        /*        sNO   sES   sSS   sSR   sFW   sTW   sCL   sCW   sLA   sLI   sSA */
        /*syn*/ [S_SR, S_ES, S_ES, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR],
        /*fin*/ [S_CL, S_FW, S_SS, S_TW, S_FW, S_TW, S_CL, S_CW, S_LA, S_LI, S_TW],
        /*ack*/ [S_CL, S_ES, S_SS, S_ES, S_FW, S_TW, S_CL, S_CW, S_CL, S_LI, S_ES],
        /*rst*/ [S_CL, S_CL, S_CL, S_SR, S_CL, S_CL, S_CL, S_CL, S_LA, S_LI, S_CL],
    ],
];

/// The state after a packet with TCP `flags` going through table `dir`, from `state`.
/// Event priority as IPVS: RST, then SYN, then FIN, then ACK; a packet with none keeps
/// the state.
#[inline(always)]
pub fn next_state(dir: u8, state: u8, flags: u8) -> u8 {
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
    let (d, s) = (dir as usize, state as usize);
    if d >= TABLES.len() || s >= STATE_COUNT {
        return state;
    }
    TABLES[d][event][s]
}

/// Whether a connection in `state` counts as active (IPVS's ActiveConn) or inactive.
#[inline(always)]
pub const fn is_active(state: u8) -> bool {
    state == ESTABLISHED
}

#[cfg(test)]
mod tests {
    use super::*;

    const PSH: u8 = 0x08;

    /// Runs `packets` (direction, flags) from NONE, returning every state reached.
    fn walk(packets: &[(u8, u8)]) -> [u8; 8] {
        let mut states = [NONE; 8];
        let mut s = NONE;
        for (i, &(d, flags)) in packets.iter().enumerate() {
            s = next_state(d, s, flags);
            states[i] = s;
        }
        states
    }

    #[test]
    fn a_dr_connection_as_the_director_sees_it() {
        let c = dir::INPUT_ONLY;
        let states = walk(&[(c, FLAG_SYN), (c, FLAG_ACK), (c, FLAG_ACK | PSH), (c, FLAG_FIN | FLAG_ACK), (c, FLAG_ACK)]);
        assert_eq!(states[..5], [SYN_RECV, ESTABLISHED, ESTABLISHED, FIN_WAIT, FIN_WAIT]);
    }

    #[test]
    fn a_nat_connection_closed_by_the_server() {
        let (i, o) = (dir::INPUT, dir::OUTPUT);
        let states = walk(&[
            (i, FLAG_SYN),
            (o, FLAG_SYN | FLAG_ACK),
            (i, FLAG_ACK),
            (o, FLAG_ACK | PSH),
            (o, FLAG_FIN | FLAG_ACK),
            (i, FLAG_ACK),
            (i, FLAG_FIN | FLAG_ACK),
            (o, FLAG_ACK),
        ]);
        assert_eq!(states, [SYN_RECV, SYN_RECV, ESTABLISHED, ESTABLISHED, FIN_WAIT, FIN_WAIT, TIME_WAIT, TIME_WAIT]);
    }

    #[test]
    fn a_nat_connection_closed_by_the_client() {
        let (i, o) = (dir::INPUT, dir::OUTPUT);
        let states = walk(&[
            (i, FLAG_SYN),
            (o, FLAG_SYN | FLAG_ACK),
            (i, FLAG_ACK),
            (i, FLAG_FIN | FLAG_ACK),
            (o, FLAG_FIN | FLAG_ACK),
            (i, FLAG_ACK),
        ]);
        assert_eq!(states[..6], [SYN_RECV, SYN_RECV, ESTABLISHED, CLOSE_WAIT, TIME_WAIT, TIME_WAIT]);
    }

    #[test]
    fn the_three_tables_differ_where_ipvs_does() {
        // A client FIN on an established connection: INPUT-ONLY cannot know the server's side.
        assert_eq!(next_state(dir::INPUT_ONLY, ESTABLISHED, FLAG_FIN), FIN_WAIT);
        assert_eq!(next_state(dir::INPUT, ESTABLISHED, FLAG_FIN), CLOSE_WAIT);
        assert_eq!(next_state(dir::OUTPUT, ESTABLISHED, FLAG_FIN), FIN_WAIT);
        // A reply RST in SYN_RECV closes; a client RST there does not (IPVS's tables).
        assert_eq!(next_state(dir::OUTPUT, SYN_RECV, FLAG_RST), CLOSE);
        assert_eq!(next_state(dir::INPUT, SYN_RECV, FLAG_RST), SYN_RECV);
        assert_eq!(next_state(dir::INPUT, SYNACK, FLAG_RST), SYN_RECV);
        assert_eq!(next_state(dir::INPUT_ONLY, SYNACK, FLAG_RST), CLOSE);
        assert_eq!(next_state(dir::OUTPUT, NONE, FLAG_SYN), SYN_SENT);
        assert_eq!(next_state(dir::OUTPUT, LISTEN, FLAG_ACK), ESTABLISHED);
    }

    #[test]
    fn reset_closes_and_syn_restarts() {
        let c = dir::INPUT_ONLY;
        assert_eq!(next_state(c, ESTABLISHED, FLAG_RST | FLAG_ACK), CLOSE);
        assert_eq!(next_state(c, CLOSE, FLAG_SYN), SYN_RECV);
        // A RST during the handshake leaves SYN_RECV (IPVS's table).
        assert_eq!(next_state(c, SYN_RECV, FLAG_RST), SYN_RECV);
        // A stray ACK with no known handshake closes (current kernels).
        assert_eq!(next_state(c, NONE, FLAG_ACK), CLOSE);
        assert_eq!(next_state(c, ESTABLISHED, 0), ESTABLISHED);
        assert_eq!(next_state(c, UDP, FLAG_SYN), UDP);
        assert_eq!(next_state(3, ESTABLISHED, FLAG_FIN), ESTABLISHED, "an unknown direction changes nothing");
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
