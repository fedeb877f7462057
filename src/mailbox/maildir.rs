//! A Maildir++ mailbox on local disk: the embedded default's inbox.
//!
//! Layout as Dovecot and Postfix write it: `new/`, `cur/`, `tmp/` for the inbox and
//! `.Processed/`, `.Review/`, `.Ignored/` beside them, so a real MDA can deliver into
//! it and a real IMAP server can serve it. Both `new/` and `cur/` of the inbox hold
//! mail to look at (a person's mail client moves what it has seen to `cur/`). A
//! message's position is its unique name, the file name without the `:2,` flags.
//! Settling is a `rename` into the target folder's `cur/`, atomic on one filesystem.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::Destination;

pub struct Maildir {
    root: PathBuf,
}

/// One message file found in the inbox.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The unique name: the file name without the `:2,…` info part.
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
}

const FOLDERS: [&str; 3] = [".Processed", ".Review", ".Ignored"];

impl Maildir {
    /// Opens the Maildir at `root`, creating the inbox and the three folders.
    pub fn open(root: &Path) -> Result<Maildir> {
        let mut dirs = vec![root.to_path_buf()];
        dirs.extend(FOLDERS.iter().map(|f| root.join(f)));
        for d in dirs {
            for sub in ["new", "cur", "tmp"] {
                std::fs::create_dir_all(d.join(sub))
                    .with_context(|| format!("cannot create {}", d.join(sub).display()))?;
            }
        }
        Ok(Maildir {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The inbox's messages, oldest delivery first (Maildir names start with the
    /// delivery time).
    pub fn scan(&self) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let dir = self.root.join(sub);
            let rd = std::fs::read_dir(&dir)
                .with_context(|| format!("cannot list {}", dir.display()))?;
            for e in rd {
                let e = e.with_context(|| format!("cannot list {}", dir.display()))?;
                let file_name = e.file_name().to_string_lossy().to_string();
                if file_name.starts_with('.') {
                    continue;
                }
                let meta = match e.metadata() {
                    Ok(m) if m.is_file() => m,
                    _ => continue,
                };
                let name = file_name
                    .split(':')
                    .next()
                    .unwrap_or(&file_name)
                    .to_string();
                out.push(Entry {
                    name,
                    path: e.path(),
                    size: meta.len(),
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Moves a message out of the inbox into its folder's `cur/`, keeping its flags.
    pub fn settle(&self, entry: &Entry, dest: Destination) -> Result<()> {
        let folder = match dest {
            Destination::Processed => ".Processed",
            Destination::Review => ".Review",
            Destination::Ignored => ".Ignored",
        };
        let file_name = entry
            .path
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_else(|| entry.name.clone());
        let target_name = if file_name.contains(":2,") {
            file_name
        } else {
            format!("{}:2,", entry.name)
        };
        let target = self.root.join(folder).join("cur").join(target_name);
        std::fs::rename(&entry.path, &target).with_context(|| {
            format!(
                "cannot move {} to {}",
                entry.path.display(),
                target.display()
            )
        })
    }

    /// Files in a folder ("" for the inbox), for tests and `mpnd status`.
    pub fn count(&self, folder: &str) -> usize {
        let base = if folder.is_empty() {
            self.root.clone()
        } else {
            self.root.join(format!(".{folder}"))
        };
        ["new", "cur"]
            .iter()
            .filter_map(|s| std::fs::read_dir(base.join(s)).ok())
            .map(|rd| rd.count())
            .sum()
    }
}

/// Delivers a message into a Maildir the way an MDA does: write into `tmp/`, then
/// rename into `new/`, so a reader never sees half a file.
pub fn deliver(root: &Path, raw: &[u8], unique: &str) -> Result<PathBuf> {
    let tmp = root.join("tmp").join(unique);
    std::fs::write(&tmp, raw).with_context(|| format!("cannot write {}", tmp.display()))?;
    let new = root.join("new").join(unique);
    std::fs::rename(&tmp, &new).with_context(|| format!("cannot deliver {}", new.display()))?;
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliver_scan_settle() {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::open(dir.path()).unwrap();
        deliver(dir.path(), b"Subject: a\n\nx\n", "1700000000.1.host").unwrap();
        std::fs::write(
            dir.path().join("cur/1600000000.2.host:2,S"),
            b"Subject: b\n\ny\n",
        )
        .unwrap();
        let entries = md.scan().unwrap();
        assert_eq!(
            entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["1600000000.2.host", "1700000000.1.host"]
        );
        md.settle(&entries[0], Destination::Review).unwrap();
        md.settle(&entries[1], Destination::Processed).unwrap();
        assert!(dir
            .path()
            .join(".Review/cur/1600000000.2.host:2,S")
            .exists());
        assert!(dir
            .path()
            .join(".Processed/cur/1700000000.1.host:2,")
            .exists());
        assert_eq!(md.scan().unwrap().len(), 0);
    }
}
