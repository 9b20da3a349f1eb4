//! `totogate install-hooks apt`: puts the `intoto` method, the
//! `Pre-Install-Pkgs` hook snippet and the `APT::Intoto` configuration in
//! place under a root directory (`/` by default).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The hook snippet as shipped; `@TOTOGATE@` becomes the binary's path.
pub const HOOK_SNIPPET: &str = include_str!("../../hooks/apt/50totogate-hook.conf");
/// The example configuration as shipped.
pub const EXAMPLE_CONFIG: &str = include_str!("../../hooks/apt/intoto.conf");

/// Where each piece goes, relative to the root.
pub const METHOD_PATH: &str = "usr/lib/apt/methods/intoto";
/// The same method for `intoto+https://` sources.
pub const METHOD_HTTPS_PATH: &str = "usr/lib/apt/methods/intoto+https";
pub const HOOK_PATH: &str = "etc/apt/apt.conf.d/50totogate-hook";
/// apt-transport-in-toto's configuration file name, kept for drop-in use.
pub const CONFIG_PATH: &str = "etc/apt/apt.conf.d/intoto";

#[derive(Debug, Default, Clone)]
pub struct Install {
    pub root: PathBuf,
    /// The totogate binary the method and hook run.
    pub exe: PathBuf,
    pub rebuilders: Vec<String>,
    pub layout: Option<PathBuf>,
    pub keyids: Vec<String>,
    pub gpg_home: Option<PathBuf>,
    pub policy: Option<PathBuf>,
    pub no_fail: bool,
    pub timeout_secs: Option<u64>,
    /// Install the hook snippet (default) or only the method.
    pub hook: bool,
    /// Replace an existing method and configuration.
    pub force: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} exists and is not totogate's: pass --force to replace it (apt-transport-in-toto's method or configuration?)")]
    Exists { path: PathBuf },
    #[error("{what} {value:?} cannot be written into apt's configuration (it has a quote, a newline or a NUL)")]
    BadValue { what: &'static str, value: String },
}

/// What was written, for the user.
#[derive(Debug, Default)]
pub struct Report {
    pub written: Vec<PathBuf>,
    pub kept: Vec<PathBuf>,
    pub warnings: Vec<String>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        path: path.to_owned(),
        source,
    }
}

fn quoted(what: &'static str, value: &str) -> Result<String, InstallError> {
    if value.contains(['"', '\n', '\r', '\0']) {
        return Err(InstallError::BadValue {
            what,
            value: value.to_owned(),
        });
    }
    Ok(format!("\"{value}\""))
}

/// The `APT::Intoto` block for these settings.
pub fn render_config(i: &Install) -> Result<String, InstallError> {
    let mut s = String::from(
        "// in-toto verification for apt, written by `totogate install-hooks apt`.\n\
         // Compatible with apt-transport-in-toto; see hooks/apt/intoto.conf for every option.\n\
         APT::Intoto {\n",
    );
    let list = |s: &mut String, name: &str, what, items: &[String]| -> Result<(), InstallError> {
        let _ = writeln!(s, "  {name} {{");
        for it in items {
            let _ = writeln!(s, "    {};", quoted(what, it)?);
        }
        s.push_str("  };\n");
        Ok(())
    };
    list(&mut s, "Rebuilders", "rebuilder", &i.rebuilders)?;
    if let Some(l) = &i.layout {
        let _ = writeln!(s, "  Layout {};", quoted("layout", &l.to_string_lossy())?);
    }
    list(&mut s, "Keyids", "key id", &i.keyids)?;
    if let Some(h) = &i.gpg_home {
        let _ = writeln!(
            s,
            "  GPGHomedir {};",
            quoted("GnuPG home", &h.to_string_lossy())?
        );
    }
    if let Some(p) = &i.policy {
        let _ = writeln!(s, "  Policy {};", quoted("policy", &p.to_string_lossy())?);
    }
    if let Some(t) = i.timeout_secs {
        let _ = writeln!(s, "  Timeout \"{t}\";");
    }
    let _ = writeln!(s, "  NoFail \"{}\";", i.no_fail);
    s.push_str("};\n");
    Ok(s)
}

/// The hook snippet pointing at `exe`.
pub fn render_hook(exe: &Path) -> Result<String, InstallError> {
    let exe = exe.to_string_lossy();
    if exe.contains([' ', '"', '\n', '\r', '\0', ';']) {
        return Err(InstallError::BadValue {
            what: "totogate binary path",
            value: exe.into_owned(),
        });
    }
    Ok(HOOK_SNIPPET.replace("@TOTOGATE@", &exe))
}

fn write_file(path: &Path, text: &str) -> Result<(), InstallError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let tmp = path.with_extension("totogate-new");
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn ours(path: &Path, exe: &Path) -> bool {
    std::fs::read_link(path).is_ok_and(|t| t == exe)
        || std::fs::read_to_string(path).is_ok_and(|t| t.contains("totogate"))
}

/// Writes the method (a symlink to the binary: it acts as the method when
/// called as `intoto`), the hook snippet and, unless one exists, the
/// configuration.
pub fn install(i: &Install) -> Result<Report, InstallError> {
    let mut report = Report::default();
    let methods = [i.root.join(METHOD_PATH), i.root.join(METHOD_HTTPS_PATH)];
    for method in &methods {
        if std::fs::symlink_metadata(method).is_ok() && !i.force && !ours(method, &i.exe) {
            return Err(InstallError::Exists {
                path: method.clone(),
            });
        }
    }
    for method in methods {
        if std::fs::symlink_metadata(&method).is_ok() {
            std::fs::remove_file(&method).map_err(io(&method))?;
        }
        if let Some(dir) = method.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        std::os::unix::fs::symlink(&i.exe, &method).map_err(io(&method))?;
        report.written.push(method);
    }

    let hook = i.root.join(HOOK_PATH);
    if i.hook {
        write_file(&hook, &render_hook(&i.exe)?)?;
        report.written.push(hook);
    }

    let config = i.root.join(CONFIG_PATH);
    let configured = i.layout.is_some() || i.policy.is_some();
    if std::fs::symlink_metadata(&config).is_ok() && !i.force {
        report.kept.push(config);
        if configured {
            report.warnings.push(format!(
                "kept the existing {}: pass --force to replace it with the settings given",
                i.root.join(CONFIG_PATH).display()
            ));
        }
    } else {
        write_file(&config, &render_config(i)?)?;
        if !configured {
            report.warnings.push(format!(
                "{} names no layout: until APT::Intoto::Layout and ::Keyids (or ::Policy) are set, \
                 every .deb is refused",
                config.display()
            ));
        }
        report.written.push(config);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_snippet_names_the_binary_and_protocol_version_3() {
        let s = render_hook(Path::new("/usr/bin/totogate")).unwrap();
        assert!(s.contains("DPkg::Pre-Install-Pkgs { \"/usr/bin/totogate apt-hook\"; };"));
        assert!(s.contains("DPkg::Tools::Options::/usr/bin/totogate::Version \"3\";"));
        assert!(render_hook(Path::new("/opt/my tools/totogate")).is_err());
    }

    #[test]
    fn config_quotes_values_and_refuses_what_apt_cannot_read() {
        let i = Install {
            rebuilders: vec!["http://127.0.0.1:8080".into()],
            layout: Some("/etc/totogate/apt/root.layout".into()),
            keyids: vec!["AB".repeat(20)],
            no_fail: true,
            ..Install::default()
        };
        let s = render_config(&i).unwrap();
        assert!(s.contains("  Rebuilders {\n    \"http://127.0.0.1:8080\";\n  };\n"));
        assert!(s.contains("  Layout \"/etc/totogate/apt/root.layout\";\n"));
        assert!(s.contains("  NoFail \"true\";\n"));
        let bad = Install {
            rebuilders: vec!["http://x\"; evil".into()],
            ..i
        };
        assert!(render_config(&bad).is_err());
    }

    #[test]
    fn refuses_to_replace_a_foreign_method_without_force() {
        let root = tempfile::tempdir().unwrap();
        let method = root.path().join(METHOD_PATH);
        std::fs::create_dir_all(method.parent().unwrap()).unwrap();
        std::fs::write(&method, "#!/usr/bin/python3\n# apt-transport-in-toto\n").unwrap();
        let i = Install {
            root: root.path().into(),
            exe: "/usr/bin/totogate".into(),
            hook: true,
            ..Install::default()
        };
        assert!(matches!(install(&i), Err(InstallError::Exists { .. })));
        let r = install(&Install { force: true, ..i }).unwrap();
        assert_eq!(r.written.len(), 4);
        assert_eq!(
            std::fs::read_link(&method).unwrap(),
            Path::new("/usr/bin/totogate")
        );
    }
}
