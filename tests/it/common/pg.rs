//! A throwaway PostgreSQL server per test: `initdb` into a temporary directory, started on a
//! free loopback port with its socket in that directory, stopped (immediately) and removed when
//! dropped. PostgreSQL refuses to run as root, so under root the server runs as the `postgres`
//! user the Debian packages create, owning only that directory.
//!
//! The binaries come from `BATON_PG_BIN`, else `pg_config --bindir`, else the newest
//! `/usr/lib/postgresql/<version>/bin`. Where there are none, [`Pg::start`] says so and the
//! test skips; CI installs them (`.ci/run`).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// The user every cluster's superuser is named after, and trusted on loopback.
pub const USER: &str = "baton";

pub struct Pg {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    /// Under root: the uid and gid the server runs as.
    run_as: Option<(u32, u32)>,
}

/// Where the PostgreSQL server binaries are, if anywhere.
pub fn bin_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("BATON_PG_BIN") {
        return Some(PathBuf::from(d));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if d.join("initdb").is_file() {
            return Some(d);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, d): &(u32, PathBuf)| d.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, d)| d)
}

/// A free TCP port on 127.0.0.1 (free when asked; the server binds it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port").local_addr().unwrap().port()
}

/// The uid and gid of a user, from /etc/passwd.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&name) && f.len() > 3).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

impl Pg {
    /// A new, started cluster; `None` (with the reason printed) when this machine has no
    /// PostgreSQL server binaries.
    pub fn start() -> Option<Pg> {
        let Some(bin) = bin_dir() else {
            eprintln!(
                "skipped: no PostgreSQL server binaries (initdb): install postgresql-15, or set BATON_PG_BIN \
                 to their directory"
            );
            return None;
        };
        // The owner of /proc/self is this process's effective user.
        let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").expect("stat /proc/self")) == 0;
        let run_as =
            if root {
                Some(user_ids("postgres").expect(
                    "running as root, PostgreSQL needs a non-root user to run as, and there is no `postgres` user",
                ))
            } else {
                None
            };
        let dir = tempfile::Builder::new().prefix("baton-pg-").tempdir().expect("temp dir");
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown the cluster directory");
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        let pg = Pg { bin, dir, port: free_port(), run_as };
        let data = pg.data();
        let out = pg
            .command("initdb")
            .args(["-D"])
            .arg(&data)
            .args(["-U", USER, "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            pg.port,
            pg.dir.path().display()
        );
        let out = pg
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(pg.dir.path().join("server.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .stdout(Stdio::null())
            .output()
            .expect("run pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(pg.dir.path().join("server.log")).unwrap_or_default()
        );
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A command for one of the server binaries, as the server's user.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut c = match self.run_as {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}")).arg(format!("--regid={gid}")).arg("--clear-groups").arg(path);
                c
            }
            None => Command::new(path),
        };
        c.env_clear().env("PATH", "/usr/bin:/bin").env("LC_ALL", "C");
        c
    }

    /// The URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// A new, empty database.
    pub fn create_db(&self, name: &str) -> String {
        self.psql_ok("postgres", &format!("CREATE DATABASE {name}"));
        self.url(name)
    }

    /// `psql` on database `db` with `sql` on stdin: stops at the first error (exit 3), no psqlrc,
    /// unaligned tuples only, so stdout is the rows, `|`-separated.
    pub fn psql(&self, db: &str, sql: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(self.bin.join("psql"))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LC_ALL", "C")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", &self.url(db)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run psql");
        child.stdin.take().unwrap().write_all(sql.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// `psql` that must succeed; its stdout.
    pub fn psql_ok(&self, db: &str, sql: &str) -> String {
        let out = self.psql(db, sql);
        assert!(out.status.success(), "psql failed on {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
