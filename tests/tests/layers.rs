//! The engine's groups of modules (ARCHITECTURE.md) use only the groups below them: nothing
//! in `consumer/src` reaches up into a group above its own, and the two top groups,
//! `commands` and `tools`, do not use each other.

use indexferry_tests::repo_file;
use std::path::Path;

/// The groups, from the bottom up; a group may use those before it in this list.
const LAYERS: &[&[&str]] = &[&["state"], &["runtime"], &["recipe"], &["pipeline"], &["commands", "tools"]];

fn layer(group: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&group))
}

/// `file`'s code lines (not comments) that name a group it may not use, as `path:line: text`.
fn reaching_up(file: &Path, group: &str, out: &mut Vec<String>) -> anyhow::Result<()> {
    let own = layer(group).expect("a known group");
    let text = std::fs::read_to_string(file)?;
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        for (at, _) in line.match_indices("crate::") {
            let used: String =
                line[at + "crate::".len()..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            let Some(theirs) = layer(&used) else { continue };
            if theirs > own || (theirs == own && used != group) {
                out.push(format!("{}:{}: {} uses {used}: {}", file.display(), n + 1, group, line.trim()));
            }
        }
    }
    Ok(())
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

#[test]
fn no_group_of_the_engine_reaches_up() -> anyhow::Result<()> {
    let src = repo_file("consumer/src");
    let mut found = vec![];
    let mut groups = 0;
    for entry in std::fs::read_dir(&src)? {
        let path = entry?.path();
        let Some(group) = path.file_name().and_then(|n| n.to_str()).filter(|_| path.is_dir()) else { continue };
        assert!(layer(group).is_some(), "consumer/src/{group} is in no layer: add it to LAYERS and ARCHITECTURE.md");
        groups += 1;
        let mut files = vec![];
        rust_files(&path, &mut files)?;
        for file in files {
            reaching_up(&file, group, &mut found)?;
        }
    }
    assert_eq!(groups, LAYERS.iter().map(|l| l.len()).sum::<usize>(), "every group has its folder");
    assert!(found.is_empty(), "modules that reach up:\n{}", found.join("\n"));
    Ok(())
}

/// The check itself sees a use that reaches up (and passes one that does not).
#[test]
fn a_use_that_reaches_up_is_found() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("x.rs");
    std::fs::write(&file, "// crate::commands in a comment\nuse crate::state::X;\nuse crate::commands::init;\n")?;
    let mut found = vec![];
    reaching_up(&file, "pipeline", &mut found)?;
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains(":3: pipeline uses commands"), "{found:?}");
    let mut found = vec![];
    reaching_up(&file, "tools", &mut found)?;
    assert_eq!(found.len(), 1, "tools may not use commands: {found:?}");
    Ok(())
}
