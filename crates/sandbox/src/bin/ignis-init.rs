//! pid 1 of an Ignis sandbox; see `ignis_sandbox::init`.

fn main() {
    ignis_sandbox::init::main()
}
