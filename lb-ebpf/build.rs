// Rebuild the eBPF object when the linker changes (as in aya-template).
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
    // bpf-linker generates the code. Misaligned loads and stores: a header field at a
    // 2-byte boundary (an IPv4 address after 14 bytes of Ethernet) is read with one
    // load instead of byte by byte; the kernel allows them on packet and map memory
    // where the CPU has efficient unaligned access (x86-64, arm64), and LLVM keeps
    // stack accesses aligned (the verifier requires it).
    println!("cargo:rustc-link-arg=--cpu-features=+allows-misaligned-mem-access");
}
