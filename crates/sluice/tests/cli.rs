//! The command surface: config errors exit 2 naming field and line; `check` reports each part;
//! `--help` teaches; query output formats.

mod common;

use common::Sandbox;

#[test]
fn config_errors_exit_2_with_field_and_line() {
    let sb = Sandbox::new();
    sb.config(
        "[sources.a]\nkind = \"files\"\nurl = \"in/\"\ndelimiter = \"ab\"\nload = \"history\"\n",
    );
    let out = sb.run(&["sync"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 4: sources.a.delimiter"), "{err}");
    assert!(err.contains("primary_key"), "every problem at once: {err}");

    sb.config("[sources.a]\nkind = \"files\"\nurl = \"in/\"\nbogus = 1\n");
    let out = sb.run(&["status"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 4") && err.contains("bogus"), "{err}");

    let missing = sb.run(&["--config", "/nonexistent/sluice.toml", "sync"], &[]);
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn check_reports_each_part_and_query_formats() {
    let sb = Sandbox::new();
    sb.write("in/a.csv", "id,name\n1,x\n2,\"y,z\"\n");
    sb.config("[sources.a]\nkind = \"files\"\nurl = \"in/\"\n");
    let out = sb.ok(&["check"]);
    assert!(
        out.contains("ok   source a") && out.contains("1 file(s) found"),
        "{out}"
    );
    assert!(out.contains("ok   warehouse local"), "{out}");
    sb.ok(&["sync"]);
    let csv = sb.ok(&[
        "query",
        "--format",
        "csv",
        "SELECT id, name FROM a.a ORDER BY id",
    ]);
    assert_eq!(csv, "id,name\n1,x\n2,\"y,z\"\n");
    let table = sb.ok(&[
        "query",
        "--warehouse",
        "local",
        "SELECT count(*) AS n FROM a.a",
    ]);
    assert!(
        table.contains("| n |") && table.contains("| 2 |"),
        "{table}"
    );
    let bad = sb.run(&["query", "SELECT * FROM nope.nope"], &[]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("nope"));
}

#[test]
fn help_teaches_the_commands() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "sync", "status", "query", "schema", "crawl", "check", "demo",
    ] {
        assert!(text.contains(cmd), "{cmd} missing from --help:\n{text}");
    }
}
