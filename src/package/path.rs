//! Lexical checks on member paths and link targets (no filesystem access).

use super::Limits;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathProblem {
    Empty,
    Absolute,
    DotDot,
    TooLong(usize),
    TooDeep(usize),
}

/// A member path as archive-relative components: `./usr//bin/x` → `usr/bin/x`.
/// `.` components and empty ones vanish; the root itself (`./`) is `""`.
///
/// Refuses absolute paths and any `..` component (even `a/../b`, which stays
/// inside: no honest packager writes one, and refusing it keeps the check
/// obviously right).
pub(crate) fn normalise(raw: &str, limits: &Limits) -> Result<String, PathProblem> {
    if raw.is_empty() {
        return Err(PathProblem::Empty);
    }
    if raw.len() > limits.max_path_len {
        return Err(PathProblem::TooLong(raw.len()));
    }
    if raw.starts_with('/') {
        return Err(PathProblem::Absolute);
    }
    let mut parts = Vec::new();
    for comp in raw.split('/') {
        match comp {
            "" | "." => {}
            ".." => return Err(PathProblem::DotDot),
            c => parts.push(c),
        }
    }
    if parts.len() > limits.max_depth {
        return Err(PathProblem::TooDeep(parts.len()));
    }
    Ok(parts.join("/"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkProblem {
    Empty,
    Absolute,
    Escapes,
}

/// Checks a symlink at `link` (normalised) pointing at `target`, and returns
/// the target as a normalised path from the package root.
///
/// `..` may only lead the target (`../../lib/x`), never follow a named
/// component (`sub/../x`): the kernel resolves `sub/..` through `sub`, which
/// may itself be a symlink (to `.`, say) so that lexical resolution would say
/// "inside" while the kernel walks out of the root. With leading `..` only,
/// the walk up goes through the link's own parents, which we created as real
/// directories, and everything after goes down from a point inside the root.
pub(crate) fn resolve_symlink(link: &str, target: &str) -> Result<String, LinkProblem> {
    if target.is_empty() {
        return Err(LinkProblem::Empty);
    }
    if target.starts_with('/') {
        return Err(LinkProblem::Absolute);
    }
    let mut stack: Vec<&str> = link.split('/').filter(|c| !c.is_empty()).collect();
    stack.pop(); // the link itself: resolution starts in its directory
    let mut descended = false;
    for comp in target.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                if descended || stack.pop().is_none() {
                    return Err(LinkProblem::Escapes);
                }
            }
            c => {
                descended = true;
                stack.push(c);
            }
        }
    }
    Ok(stack.join("/"))
}

/// `name-version` → (`name`, `version`). Splits before the first `-` that
/// is followed by a `N.N.N` version (so `foo-3d-1.0.0-rc-2` works), else at
/// the last `-` followed by a digit.
pub(crate) fn split_crate_dir(dir: &str) -> Option<(&str, &str)> {
    let dashes: Vec<usize> = dir
        .char_indices()
        .filter(|&(i, c)| {
            c == '-' && i > 0 && dir[i + 1..].starts_with(|d: char| d.is_ascii_digit())
        })
        .map(|(i, _)| i)
        .collect();
    let semver_like = |v: &str| {
        let core = v.split(['-', '+']).next().unwrap_or("");
        let nums: Vec<&str> = core.split('.').collect();
        nums.len() == 3
            && nums
                .iter()
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let at = dashes
        .iter()
        .copied()
        .find(|&i| semver_like(&dir[i + 1..]))
        .or(dashes.last().copied())?;
    Some((&dir[..at], &dir[at + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_refuses() {
        let l = Limits::default();
        assert_eq!(normalise("./usr//bin/./x", &l), Ok("usr/bin/x".into()));
        assert_eq!(normalise("./", &l), Ok("".into()));
        assert_eq!(normalise("a/b/", &l), Ok("a/b".into()));
        assert_eq!(normalise("/etc/passwd", &l), Err(PathProblem::Absolute));
        assert_eq!(normalise("./../etc", &l), Err(PathProblem::DotDot));
        assert_eq!(normalise("a/../b", &l), Err(PathProblem::DotDot));
        assert_eq!(normalise("", &l), Err(PathProblem::Empty));
        assert_eq!(
            normalise(&"x".repeat(4097), &l),
            Err(PathProblem::TooLong(4097))
        );
        assert_eq!(
            normalise(&"d/".repeat(65), &l),
            Err(PathProblem::TooDeep(65))
        );
        assert!(normalise(&"d/".repeat(64), &l).is_ok());
        // `..` hidden as a longer name is just a name.
        assert_eq!(normalise("..a/...", &l), Ok("..a/...".into()));
    }

    #[test]
    fn symlink_targets() {
        assert_eq!(resolve_symlink("usr/bin/x", "y"), Ok("usr/bin/y".into()));
        assert_eq!(
            resolve_symlink("usr/bin/x", "../lib/y"),
            Ok("usr/lib/y".into())
        );
        assert_eq!(resolve_symlink("usr/bin/x", "../.."), Ok("".into()));
        assert_eq!(
            resolve_symlink("usr/bin/x", "../../.."),
            Err(LinkProblem::Escapes)
        );
        assert_eq!(resolve_symlink("x", "/etc"), Err(LinkProblem::Absolute));
        assert_eq!(resolve_symlink("x", ""), Err(LinkProblem::Empty));
        // Inside lexically, but `l` could be a symlink to `.`.
        assert_eq!(resolve_symlink("a/x", "l/../y"), Err(LinkProblem::Escapes));
        assert_eq!(resolve_symlink("x", "./."), Ok("".into()));
    }

    #[test]
    fn crate_dirs() {
        assert_eq!(split_crate_dir("serde-1.0.0"), Some(("serde", "1.0.0")));
        assert_eq!(
            split_crate_dir("foo-bar-0.2.10-alpha.1"),
            Some(("foo-bar", "0.2.10-alpha.1"))
        );
        assert_eq!(
            split_crate_dir("foo-3d-1.0.0-rc-2"),
            Some(("foo-3d", "1.0.0-rc-2"))
        );
        assert_eq!(split_crate_dir("odd-2"), Some(("odd", "2")));
        assert_eq!(split_crate_dir("noversion"), None);
        assert_eq!(split_crate_dir("-1.0.0"), None);
    }
}
