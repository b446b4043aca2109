//! The `inspect` example's command-line interface, as outside checks use it.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

fn run(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(common::example_binary("inspect"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn decodes_hex_argument_and_stdin() {
    let (code, out, _) = run(&["decode", "--format", "tlv", "--path", "/5/0", "--hex", "C10301c10500"], b"");
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        r#"[{"path":"/5/0/3","type":"integer","value":1},{"path":"/5/0/5","type":"integer","value":0}]"#
    );
    let (code, out, _) = run(&["decode", "--format", "42", "--path", "/5/0/0"], &[0, 1, 0xff]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), r#"[{"path":"/5/0/0","type":"opaque","value":"0001ff"}]"#);
    // Records sorted by path numerically; SenML time kept.
    let (code, out, _) = run(
        &["decode", "--format", "senml-json", "--path", "/"],
        br#"[{"bn":"/3/0/","bt":1700000000,"n":"13","v":5},{"n":"2","vs":"x"}]"#,
    );
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        r#"[{"path":"/3/0/2","type":"string","value":"x","time":1700000000},{"path":"/3/0/13","type":"time","value":5,"time":1700000000}]"#
    );
}

#[test]
fn encodes_json_from_stdin() {
    let records = br#"[{"path":"/5/0/1","type":"string","value":""}]"#;
    let (code, out, _) = run(&["encode", "--format", "11542", "--path", "/5/0/1"], records);
    assert_eq!((code, out.trim()), (0, "c001"));
    let records = br#"[{"path":"/3/0/0","type":"string","value":"Open Mobile Alliance"}]"#;
    let (code, out, _) = run(&["encode", "--format", "senml-cbor", "--path", "/3/0/0"], records);
    assert_eq!((code, out.trim()), (0, "81a221662f332f302f3003744f70656e204d6f62696c6520416c6c69616e6365"));
}

#[test]
fn bad_input_exits_1_with_one_line_naming_the_offset() {
    let (code, out, err) = run(&["decode", "--format", "tlv", "--path", "/3/0", "--hex", "c30061"], b"");
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("at byte 3"), "{err}");
    let (code, _, err) = run(&["decode", "--format", "senml-cbor", "--path", "/"], &[0x81, 0xa1, 0x00]);
    assert_eq!(code, 1);
    assert!(err.contains("at byte 3"), "{err}");
    for args in [
        &["decode", "--format", "nope", "--path", "/3/0"][..],
        &["decode", "--format", "tlv", "--path", "3/0"],
        &["decode", "--format", "tlv"],
        &["frobnicate"],
        &["decode", "--format", "tlv", "--path", "/3/0", "--hex", "zz"],
    ] {
        let (code, _, err) = run(args, b"");
        assert_eq!(code, 1, "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
    let (code, _, err) = run(&["encode", "--format", "tlv", "--path", "/3/0"], b"[{\"path\":\"/3/0/0\"}");
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
}
