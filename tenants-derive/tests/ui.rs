//! Compile-time behaviour of `#[with_rls]`: what it accepts (and registers), and the one
//! error each mistake gives.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
