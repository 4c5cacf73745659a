//! Attachment paths (SPEC 11.2): checked in a fixed order, because the order decides the message.

use std::path::{Component, Path, PathBuf};

/// Check one attachment path given relative to `project`; answer its canonical absolute path.
/// Errors are the bare messages; callers prefix `Invalid attachment path: `.
pub fn check(project: &Path, given: &str) -> Result<PathBuf, String> {
    let p = Path::new(given);
    if p.is_absolute() {
        return Err("Attachment path must be relative".into());
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err("Path traversal not allowed in attachment paths".into());
    }
    let joined = project.join(p);
    let Ok(meta) = std::fs::symlink_metadata(&joined) else {
        return Err(format!("Attachment file not found: {given}"));
    };
    let Ok(real) = joined.canonicalize() else {
        return Err(format!("Attachment file not found: {given}"));
    };
    let root = project.canonicalize().unwrap_or_else(|_| project.to_path_buf());
    if !real.starts_with(&root) {
        return Err("Attachment path must be within project directory".into());
    }
    if meta.file_type().is_symlink() {
        return Err("Symlink attachments are not allowed".into());
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn the_five_checks_in_order() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.txt"), "s").unwrap();
        let t = tempfile::tempdir().unwrap();
        let proj = t.path();
        std::fs::create_dir(proj.join("sub")).unwrap();
        std::fs::write(proj.join("sub/a.txt"), "a").unwrap();
        symlink(outside.path().join("secret.txt"), proj.join("out-link")).unwrap();
        symlink(proj.join("sub/a.txt"), proj.join("in-link")).unwrap();
        symlink(outside.path(), proj.join("outdir")).unwrap();

        assert_eq!(check(proj, "/etc/passwd").unwrap_err(), "Attachment path must be relative");
        assert_eq!(check(proj, "sub/../sub/a.txt").unwrap_err(), "Path traversal not allowed in attachment paths");
        assert_eq!(check(proj, "../x").unwrap_err(), "Path traversal not allowed in attachment paths");
        assert_eq!(check(proj, "nope.txt").unwrap_err(), "Attachment file not found: nope.txt");
        assert_eq!(check(proj, "out-link").unwrap_err(), "Attachment path must be within project directory");
        assert_eq!(check(proj, "outdir/secret.txt").unwrap_err(), "Attachment path must be within project directory");
        assert_eq!(check(proj, "in-link").unwrap_err(), "Symlink attachments are not allowed");
        let ok = check(proj, "sub/a.txt").unwrap();
        assert!(ok.is_absolute() && ok.ends_with("sub/a.txt"));
    }
}
