//! The web console. Until the console issue lands this is a placeholder that proves the shared
//! crate builds for the browser's target; the master serves a plain page meanwhile.

fn main() {
    let _ = kiln_shared::codec::PROTOCOL_VERSION;
}
