//! Loading the XDP object and attaching it to interfaces.
use anyhow::{Context, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};

/// The balancer program, the veth peer stub, the connection expiry the controller's
/// sweep runs through BPF_PROG_TEST_RUN, and a TUN real server's IPIP decapsulator.
pub const BALANCE_PROGRAM: &str = "xlb_balance";
pub const PASS_PROGRAM: &str = "xlb_pass";
pub const EXPIRE_PROGRAM: &str = "xlb_expire";
pub const DECAP_PROGRAM: &str = "xlb_decap";
/// The XDP verdict values (linux/bpf.h).
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;
const PROGRAMS: [&str; 4] = [BALANCE_PROGRAM, PASS_PROGRAM, EXPIRE_PROGRAM, DECAP_PROGRAM];

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native (driver) mode, falling back to SKB (generic) mode if the driver refuses.
    Auto,
    /// Native (driver) mode only.
    Native,
    /// SKB (generic) mode.
    Skb,
}

impl AttachMode {
    pub const fn name(self) -> &'static str {
        match self {
            AttachMode::Auto => "auto",
            AttachMode::Native => "native",
            AttachMode::Skb => "skb",
        }
    }
}

/// Loads the object with every program loaded into the kernel (verified), none attached.
pub fn load() -> Result<Ebpf> {
    load_with_sizes(&[])
}

/// As [`load`], with some maps' sizes overridden (tests shrink tables to fill them).
pub fn load_with_sizes(sizes: &[(&'static str, u32)]) -> Result<Ebpf> {
    if crate::ebpf::OBJECT.is_empty() {
        bail!("this xlb was built with AYA_BUILD_SKIP set and carries no XDP object; rebuild without it");
    }
    let mut loader = EbpfLoader::new();
    for (name, size) in sizes {
        loader.map_max_entries(name, *size);
    }
    let mut ebpf = loader.load(crate::ebpf::OBJECT).context("loading the XDP object")?;
    for program in PROGRAMS {
        xdp(&mut ebpf, program)?.load().with_context(|| format!("loading program {program} into the kernel"))?;
    }
    Ok(ebpf)
}

/// Runs `xlb_expire` on one flow: true if it was idle past its timeout and is now gone.
pub fn expire_flow(ebpf: &mut Ebpf, flow: &lb_common::FlowKey) -> Result<bool> {
    use aya::programs::{TestRun, TestRunOptions};
    // The key is the "frame"; 16 bytes is above the 14-byte minimum of an XDP test run.
    let bytes = unsafe { std::slice::from_raw_parts((flow as *const lb_common::FlowKey).cast::<u8>(), size_of_val(flow)) };
    let opts = TestRunOptions { data_in: Some(bytes), ..Default::default() };
    let result = xdp(ebpf, EXPIRE_PROGRAM)?.test_run(opts).context("running xlb_expire")?;
    Ok(result.return_value == XDP_PASS)
}

pub fn xdp<'a>(ebpf: &'a mut Ebpf, program: &str) -> Result<&'a mut Xdp> {
    let prog = ebpf.program_mut(program).with_context(|| format!("object has no program {program}"))?;
    Ok(prog.try_into()?)
}

/// An attachment: the link (it lives as long as the object, unless taken) and the mode
/// actually used, so the caller can say which.
pub struct Attached {
    pub link: XdpLinkId,
    pub mode: AttachMode,
}

/// Attaches `program` to `iface`; Auto tries native mode, then SKB mode.
pub fn attach(ebpf: &mut Ebpf, program: &str, iface: &str, mode: AttachMode) -> Result<Attached> {
    let prog = xdp(ebpf, program)?;
    match mode {
        AttachMode::Skb => {
            let link = prog.attach(iface, XdpMode::Skb).with_context(|| format!("attaching to {iface} in SKB mode"))?;
            Ok(Attached { link, mode: AttachMode::Skb })
        }
        AttachMode::Native => {
            let link = prog.attach(iface, XdpMode::Driver).with_context(|| format!("attaching to {iface} in native mode"))?;
            Ok(Attached { link, mode: AttachMode::Native })
        }
        AttachMode::Auto => match prog.attach(iface, XdpMode::Driver) {
            Ok(link) => Ok(Attached { link, mode: AttachMode::Native }),
            Err(native_err) => {
                eprintln!("xlb: native XDP on {iface} refused ({native_err}); falling back to SKB mode");
                let link = prog.attach(iface, XdpMode::Skb).with_context(|| format!("attaching to {iface} in SKB mode"))?;
                Ok(Attached { link, mode: AttachMode::Skb })
            }
        },
    }
}
