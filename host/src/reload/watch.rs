//! The file trigger: watches the directories of the config and module files (not the
//! files: editors replace files by rename, and Kubernetes swaps a `..data` symlink),
//! debounces bursts of events, then reloads.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};

use crate::server::Shared;

/// Quiet time after the last event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Starts watching; returns the watcher (dropping it stops the watch) and the task that
/// reloads. Must run inside a tokio runtime.
pub fn spawn_watcher(shared: Arc<Shared>) -> Option<(RecommendedWatcher, tokio::task::JoinHandle<()>)> {
    let reloader = shared.reloader.clone()?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            for p in event.paths {
                let _ = tx.send(p);
            }
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the file watcher; reload with SIGHUP or POST /reload");
            return None;
        }
    };
    let watched = watch_dirs(&mut watcher, &reloader.watched_files(&shared.generation.load().config));
    let task = tokio::spawn(async move {
        let mut watched = watched;
        while let Some(first) = rx.recv().await {
            let mut relevant = is_relevant(&first, &watched);
            // Debounce: collect the burst.
            loop {
                match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                    Ok(Some(p)) => relevant |= is_relevant(&p, &watched),
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if !relevant {
                continue;
            }
            let (r, s) = (reloader.clone(), shared.clone());
            let _ = tokio::task::spawn_blocking(move || r.reload(&s)).await;
            // The new config may name new module files.
            watched = reloader.watched_files(&shared.generation.load().config).into_iter().collect();
        }
    });
    Some((watcher, task))
}

/// Watches the parent directory of every file; returns the set of files of interest.
fn watch_dirs(watcher: &mut RecommendedWatcher, files: &[PathBuf]) -> HashSet<PathBuf> {
    let mut dirs = HashSet::new();
    for f in files {
        let dir = f.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if dirs.insert(dir.to_path_buf()) {
            if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory");
            }
        }
    }
    files.iter().cloned().collect()
}

/// An event matters when it names a watched file, or a `..data`-style symlink swap in a
/// watched directory (Kubernetes ConfigMaps).
fn is_relevant(path: &Path, watched: &HashSet<PathBuf>) -> bool {
    if watched.contains(path) {
        return true;
    }
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    if name.starts_with("..") {
        return true;
    }
    // Compare by file name within the same directory (paths may differ in form).
    watched.iter().any(|w| w.file_name() == path.file_name() && same_dir(w, path))
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.parent().and_then(|p| p.canonicalize().ok()), b.parent().and_then(|p| p.canonicalize().ok())) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relevance() {
        let dir = std::env::temp_dir();
        let cfg = dir.join("wasmesh-watch-test.yaml");
        let watched: HashSet<PathBuf> = [cfg.clone()].into_iter().collect();
        assert!(is_relevant(&cfg, &watched));
        assert!(is_relevant(&dir.join("..data"), &watched));
        assert!(is_relevant(&dir.join("..2026_11_24_12_00_00.123"), &watched));
        assert!(!is_relevant(&dir.join("other.txt"), &watched));
    }
}
