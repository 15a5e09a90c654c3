//! docker-compose.yml really runs: `dev/compose` starts its kafka, es8 and demo services with
//! podman-compose (server images built here from dev/stack's Maven artifacts, indexferry's
//! from these tests' binaries), and the demo migration inside runs to `demo: ok`: the
//! rollover done, no failed write, verify identical.

use indexferry_tests::{bin, dev_script};
use std::process::Command;

#[test]
fn the_compose_files_demo_migration_ends_ok() -> anyhow::Result<()> {
    let bins = bin("indexferry").parent().map(|p| p.to_path_buf()).unwrap_or_default();
    let out = Command::new(dev_script("compose")).arg("--bin-dir").arg(&bins).output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "dev/compose failed:\n{text}");
    let ok = text.lines().find(|l| l.starts_with("demo: ok")).unwrap_or_else(|| panic!("no `demo: ok` line:\n{text}"));
    assert!(ok.contains("failed_writes=0") && ok.contains("verify=identical"), "{ok}");
    let pause: u64 = ok
        .split_whitespace()
        .find_map(|w| w.strip_prefix("write_pause_ms="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no write pause in {ok}"));
    assert!(pause > 0, "{ok}");
    println!("{ok}");
    Ok(())
}
