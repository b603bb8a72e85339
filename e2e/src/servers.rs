//! Real database servers for the tests, owned by the test that starts them: PostgreSQL and
//! Redis from Debian's packages (`tools/install-deps.sh` installs `postgresql` and
//! `redis-server`), each in a fresh temporary directory, on loopback, on a free port, stopped
//! when the value is dropped. Nothing of the machine's own services is used or changed.
//!
//! PostgreSQL refuses to run as root, so the cluster belongs to the `postgres` user the package
//! creates; `initdb` trusts local connections (loopback only) for user `gotel`.
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{run, wait_until, Proc};

/// A port nobody listens on right now (bound and released; the server binds it next).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The newest PostgreSQL server binaries of the Debian packages (`/usr/lib/postgresql/N/bin`).
fn postgres_bin_dir() -> Result<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (/usr/lib/postgresql missing): run tools/install-deps.sh")?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("pg_ctl").exists())
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, b)| b).context("no PostgreSQL server in /usr/lib/postgresql/*/bin: run tools/install-deps.sh")
}

/// Whether the servers can be started here (for `require!`-style skips): the reason if not.
pub fn missing_servers() -> Option<String> {
    if let Err(e) = postgres_bin_dir() {
        return Some(format!("needs {e}"));
    }
    if !Path::new("/usr/bin/redis-server").exists() {
        return Some("needs redis-server (run tools/install-deps.sh)".into());
    }
    None
}

fn as_postgres(program: &Path) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"]).arg(program);
    cmd
}

/// A PostgreSQL cluster of its own: user `gotel`, database `gotel`, trust auth on loopback.
pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Postgres {
    pub fn start() -> Result<Postgres> {
        let bin = postgres_bin_dir()?;
        let dir = tempfile::Builder::new().prefix("gotel-pg").tempdir()?;
        let data = dir.path().join("data");
        let chown = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status()?;
        if !chown.success() {
            bail!("chown postgres {}: {chown} (is the postgresql package installed?)", dir.path().display());
        }
        let mut init = as_postgres(&bin.join("initdb"));
        init.arg("-D").arg(&data).args(["-A", "trust", "-U", "gotel", "--no-sync", "-E", "UTF8"]);
        let (st, so, se) = run("initdb", init, Duration::from_secs(120))?;
        if !st.success() {
            bail!("initdb failed: {st}\n{so}{se}");
        }
        let port = free_port()?;
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            dir.path().display()
        );
        let mut start = as_postgres(&bin.join("pg_ctl"));
        start.arg("-D").arg(&data).arg("-o").arg(opts).arg("-l").arg(dir.path().join("log")).args(["-w", "start"]);
        let (st, so, se) = run("pg_ctl start", start, Duration::from_secs(60))?;
        let pg = Postgres { port, bin, data, _dir: dir };
        if !st.success() {
            let log = std::fs::read_to_string(pg._dir.path().join("log")).unwrap_or_default();
            bail!("pg_ctl start failed: {st}\n{so}{se}\n{log}");
        }
        let mut create = as_postgres(&pg.bin.join("createdb"));
        create.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "gotel", "gotel"]);
        let (st, so, se) = run("createdb", create, Duration::from_secs(60))?;
        if !st.success() {
            bail!("createdb failed: {st}\n{so}{se}");
        }
        Ok(pg)
    }

    /// `postgres://gotel@127.0.0.1:PORT/gotel?sslmode=disable`
    pub fn dsn(&self) -> String {
        format!("postgres://gotel@127.0.0.1:{}/gotel?sslmode=disable", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let mut stop = as_postgres(&self.bin.join("pg_ctl"));
        stop.arg("-D").arg(&self.data).args(["-m", "immediate", "-w", "stop"]);
        let _ = run("pg_ctl stop", stop, Duration::from_secs(60));
    }
}

/// A Redis server of its own, without persistence.
pub struct Redis {
    pub port: u16,
    proc: Proc,
    _dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Result<Redis> {
        let dir = tempfile::Builder::new().prefix("gotel-redis").tempdir()?;
        let port = free_port()?;
        let mut cmd = Command::new("/usr/bin/redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path());
        let proc = Proc::spawn("redis-server", cmd)?;
        let mut r = Redis { port, proc, _dir: dir };
        if !wait_until(Duration::from_secs(20), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()) {
            r.proc.kill();
            bail!("redis-server did not listen on {port}: {}{}", r.proc.stdout_string(), r.proc.stderr_string());
        }
        Ok(r)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}
