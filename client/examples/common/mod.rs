// Shared by the examples: which backend to use.
//
// `--device` uses /dev/bus1 (run the example under the shim:
// `scripts/bus1-run target/debug/examples/NAME --device`); otherwise the
// engine linked into the example, in `$BUS1_DOMAIN` or the user's default
// domain.
pub fn backend() -> bus1::Backend {
    if std::env::args().any(|a| a == "--device") {
        bus1::Backend::device()
    } else {
        bus1::Backend::embedded()
    }
}
