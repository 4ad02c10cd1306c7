//! Loading the XDP object and attaching it to interfaces.
use anyhow::{Context, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{Xdp, XdpMode},
};

/// The balancer program and the veth peer stub in the object.
pub const BALANCE_PROGRAM: &str = "xlb_balance";
pub const PASS_PROGRAM: &str = "xlb_pass";

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

/// Loads the object with `program` loaded into the kernel (verified), not attached.
pub fn load(program: &str) -> Result<Ebpf> {
    if crate::ebpf::OBJECT.is_empty() {
        bail!("this xlb was built with AYA_BUILD_SKIP set and carries no XDP object; rebuild without it");
    }
    let mut ebpf = EbpfLoader::new().load(crate::ebpf::OBJECT).context("loading the XDP object")?;
    xdp(&mut ebpf, program)?.load().with_context(|| format!("loading program {program} into the kernel"))?;
    Ok(ebpf)
}

pub fn xdp<'a>(ebpf: &'a mut Ebpf, program: &str) -> Result<&'a mut Xdp> {
    let prog = ebpf.program_mut(program).with_context(|| format!("object has no program {program}"))?;
    Ok(prog.try_into()?)
}

/// Attaches `program` to `iface`. Returns the mode actually used ("native" or "skb"),
/// so the caller can say which. The link lives as long as `ebpf`.
pub fn attach(ebpf: &mut Ebpf, program: &str, iface: &str, mode: AttachMode) -> Result<AttachMode> {
    let prog = xdp(ebpf, program)?;
    match mode {
        AttachMode::Skb => {
            prog.attach(iface, XdpMode::Skb).with_context(|| format!("attaching to {iface} in SKB mode"))?;
            Ok(AttachMode::Skb)
        }
        AttachMode::Native => {
            prog.attach(iface, XdpMode::Driver).with_context(|| format!("attaching to {iface} in native mode"))?;
            Ok(AttachMode::Native)
        }
        AttachMode::Auto => match prog.attach(iface, XdpMode::Driver) {
            Ok(_) => Ok(AttachMode::Native),
            Err(native_err) => {
                eprintln!("xlb: native XDP on {iface} refused ({native_err}); falling back to SKB mode");
                prog.attach(iface, XdpMode::Skb).with_context(|| format!("attaching to {iface} in SKB mode"))?;
                Ok(AttachMode::Skb)
            }
        },
    }
}
