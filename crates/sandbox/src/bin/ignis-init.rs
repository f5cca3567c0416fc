//! pid 1 of an Ignis sandbox; see `ignis_sandbox::init`.
//!
//! Started afresh for every sandbox, so it skips the Rust runtime's start-up
//! (stack-overflow handlers, which read `/proc/self/maps`): `main` is the C one.

#![no_main]

#[unsafe(no_mangle)]
extern "C" fn main(_argc: std::ffi::c_int, _argv: *const *const std::ffi::c_char) -> std::ffi::c_int {
    ignis_sandbox::init::main()
}
