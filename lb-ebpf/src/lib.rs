// The XDP program is the `lb-ebpf` binary (src/main.rs), built for bpfel-unknown-none by
// xlb-core's build.rs. This empty library lets xlb-core name the crate as a
// build-dependency so cargo rebuilds the object when the fast path changes.
#![no_std]
