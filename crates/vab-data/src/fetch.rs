//! `vab data fetch`: downloads a dataset from its official URLs, verifies each file's SHA-256
//! and unpacks it. A file is written under a temporary name and renamed only once its checksum
//! matches, so an interrupted or corrupt download never looks like a valid file.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::{DataError, Result};
use crate::fsutil;
use crate::progress::Progress;

/// One file to download and the SHA-256 it must have.
#[derive(Clone, Debug)]
pub struct RemoteFile {
    pub url: String,
    pub sha256: String,
}

impl RemoteFile {
    fn file_name(&self) -> &str {
        self.url.rsplit('/').next().unwrap_or(&self.url)
    }
}

/// What to do with the downloaded files.
#[derive(Clone, Debug)]
pub enum Unpack {
    /// Extract a `.tar.gz` that holds `folder` (the CIFAR archives).
    TarGz { folder: String },
    /// Keep the files as they are in `folder` (IDX `.gz` files, read directly).
    Keep { folder: String },
}

/// A downloadable dataset.
#[derive(Clone, Debug)]
pub struct FetchSpec {
    pub name: String,
    pub files: Vec<RemoteFile>,
    pub unpack: Unpack,
}

/// Names `vab data fetch` accepts.
pub const DATASETS: [&str; 4] = ["cifar10", "cifar100", "mnist", "fashion-mnist"];

/// The official source of a dataset, by name (see [`DATASETS`]).
pub fn official(name: &str) -> Option<FetchSpec> {
    let file = |url: &str, sha256: &str| RemoteFile { url: url.into(), sha256: sha256.into() };
    let idx = |base: &str, sums: [&str; 4]| {
        ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
            .iter()
            .zip(sums)
            .map(|(f, s)| file(&format!("{base}{f}"), s))
            .collect()
    };
    let (files, unpack) = match name {
        "cifar10" => (
            vec![file("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd")],
            Unpack::TarGz { folder: "cifar-10-batches-bin".into() },
        ),
        "cifar100" => (
            vec![file("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz", "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec")],
            Unpack::TarGz { folder: "cifar-100-binary".into() },
        ),
        // yann.lecun.com no longer serves the files; this is the mirror TensorFlow uses.
        "mnist" => (
            idx(
                "https://storage.googleapis.com/cvdf-datasets/mnist/",
                [
                    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                ],
            ),
            Unpack::Keep { folder: "mnist".into() },
        ),
        "fashion-mnist" => (
            idx(
                "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                [
                    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                ],
            ),
            Unpack::Keep { folder: "fashion-mnist".into() },
        ),
        _ => return None,
    };
    Some(FetchSpec { name: name.into(), files, unpack })
}

impl FetchSpec {
    /// The same files fetched from `base` (a mirror URL ending in `/`); checksums stay.
    pub fn with_mirror(mut self, base: &str) -> Self {
        let base = base.trim_end_matches('/');
        for f in &mut self.files {
            f.url = format!("{base}/{}", f.file_name());
        }
        self
    }

    fn folder(&self) -> &str {
        match &self.unpack {
            Unpack::TarGz { folder } | Unpack::Keep { folder } => folder,
        }
    }
}

/// Downloads, verifies and unpacks `spec` under `dir`; returns the folder to load.
/// Files already present with the right checksum are not downloaded again.
pub fn fetch(spec: &FetchSpec, dir: &Path, progress: &dyn Progress) -> Result<PathBuf> {
    let target = dir.join(spec.folder());
    match &spec.unpack {
        Unpack::TarGz { folder } => {
            if target.is_dir() {
                return Ok(target);
            }
            let archive = dir.join(spec.files[0].file_name());
            download_verified(&spec.files[0], &archive, progress)?;
            extract_folder(&archive, dir, folder)?;
        }
        Unpack::Keep { .. } => {
            for file in &spec.files {
                download_verified(file, &target.join(file.file_name()), progress)?;
            }
        }
    }
    Ok(target)
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    std::io::copy(&mut file, &mut hasher).map_err(|e| DataError::io(path, e))?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Downloads `file` to `dest` unless a verified copy is there.
pub fn download_verified(file: &RemoteFile, dest: &Path, progress: &dyn Progress) -> Result<()> {
    if dest.is_file() && sha256_file(dest)? == file.sha256 {
        return Ok(());
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
    }
    let part = fsutil::temp_sibling(dest);
    let result = download_to(file, &part, progress).and_then(|actual| {
        if actual == file.sha256 {
            std::fs::rename(&part, dest).map_err(|e| DataError::io(dest, e))
        } else {
            Err(DataError::Checksum { path: dest.to_path_buf(), expected: file.sha256.clone(), actual })
        }
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result
}

/// Streams the body of `file.url` into `part`; returns its SHA-256.
fn download_to(file: &RemoteFile, part: &Path, progress: &dyn Progress) -> Result<String> {
    let fail = |message: String| DataError::Download { url: file.url.clone(), message };
    let agent = ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(30)).timeout_read(Duration::from_secs(60)).build();
    let response = agent.get(&file.url).call().map_err(|e| fail(describe_http_error(e)))?;
    let expected_len: Option<u64> = response.header("Content-Length").and_then(|v| v.parse().ok());
    progress.start(&format!("downloading {}", file.file_name()), expected_len.unwrap_or(0));
    let mut reader = response.into_reader();
    let mut out = std::fs::File::create(part).map_err(|e| DataError::io(part, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| fail(format!("transfer interrupted after {total} bytes: {e}")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| DataError::io(part, e))?;
        total += n as u64;
        progress.advance(n as u64);
    }
    progress.finish();
    if let Some(len) = expected_len.filter(|&len| len != total) {
        return Err(fail(format!("transfer interrupted: got {total} of {len} bytes")));
    }
    out.sync_all().map_err(|e| DataError::io(part, e))?;
    Ok(hex(&hasher.finalize()))
}

/// The reason of a failed request, without repeating the URL the error already names.
fn describe_http_error(error: ureq::Error) -> String {
    match error {
        ureq::Error::Status(code, _) => format!("server answered HTTP {code}"),
        ureq::Error::Transport(t) => {
            let cause = std::error::Error::source(&t).map(|s| format!(" ({s})")).unwrap_or_default();
            format!("{}: {}{cause}", t.kind(), t.message().unwrap_or("request failed"))
        }
    }
}

/// Extracts `archive` and moves its `folder` into `dir` in one rename.
fn extract_folder(archive: &Path, dir: &Path, folder: &str) -> Result<()> {
    let staging = dir.join(format!(".vab-extract-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let result = (|| {
        let file = std::fs::File::open(archive).map_err(|e| DataError::io(archive, e))?;
        tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)))
            .unpack(&staging)
            .map_err(|e| DataError::invalid(archive, format!("cannot extract: {e}")))?;
        let inner = staging.join(folder);
        if !inner.is_dir() {
            return Err(DataError::invalid(archive, format!("archive holds no `{folder}` folder")));
        }
        std::fs::rename(&inner, dir.join(folder)).map_err(|e| DataError::io(dir.join(folder), e))
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use std::io::BufRead;
    use std::net::TcpListener;

    /// Serves `body` over HTTP on 127.0.0.1 for every request; when `cut` is set the connection
    /// closes after that many body bytes although the header announces all of them.
    fn serve(body: Vec<u8>, cut: Option<usize>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body[..cut.unwrap_or(body.len())]);
            }
        });
        format!("http://{addr}")
    }

    /// A `.tar.gz` holding `folder/data_batch_1.bin`.
    fn archive(folder: &str) -> Vec<u8> {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        let data = vec![1u8; 3073];
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, format!("{folder}/data_batch_1.bin"), &data[..]).unwrap();
        builder.into_inner().unwrap().finish().unwrap()
    }

    fn spec(base: &str, sha256: String) -> FetchSpec {
        FetchSpec {
            name: "t".into(),
            files: vec![RemoteFile { url: format!("{base}/c.tar.gz"), sha256 }],
            unpack: Unpack::TarGz { folder: "cifar-10-batches-bin".into() },
        }
    }

    fn sha(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn right_checksum_is_accepted_and_extracted() {
        let body = archive("cifar-10-batches-bin");
        let base = serve(body.clone(), None);
        let dir = tempfile::tempdir().unwrap();
        let folder = fetch(&spec(&base, sha(&body)), dir.path(), &NoProgress).unwrap();
        assert_eq!(std::fs::read(folder.join("data_batch_1.bin")).unwrap().len(), 3073);
        let mut names = leftovers(dir.path());
        names.sort();
        assert_eq!(names, vec!["c.tar.gz", "cifar-10-batches-bin"]);
    }

    #[test]
    fn wrong_checksum_is_rejected_and_nothing_kept() {
        let base = serve(archive("cifar-10-batches-bin"), None);
        let dir = tempfile::tempdir().unwrap();
        let err = fetch(&spec(&base, "0".repeat(64)), dir.path(), &NoProgress).unwrap_err();
        assert!(matches!(err, DataError::Checksum { .. }), "{err}");
        assert!(err.to_string().contains("SHA-256 mismatch"));
        assert!(leftovers(dir.path()).is_empty(), "{:?}", leftovers(dir.path()));
    }

    #[test]
    fn interrupted_download_is_not_left_behind() {
        let body = archive("cifar-10-batches-bin");
        let base = serve(body.clone(), Some(body.len() / 2));
        let dir = tempfile::tempdir().unwrap();
        let err = fetch(&spec(&base, sha(&body)), dir.path(), &NoProgress).unwrap_err().to_string();
        assert!(err.contains("interrupted"), "{err}");
        assert!(leftovers(dir.path()).is_empty(), "{:?}", leftovers(dir.path()));
    }

    #[test]
    fn verified_file_is_not_downloaded_again() {
        let body = b"idx bytes".to_vec();
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f.gz");
        std::fs::write(&dest, &body).unwrap();
        // Port 9 on 127.0.0.1 has no server: any download attempt would fail.
        let file = RemoteFile { url: "http://127.0.0.1:9/f.gz".into(), sha256: sha(&body) };
        download_verified(&file, &dest, &NoProgress).unwrap();
    }

    #[test]
    fn official_specs_exist_for_every_listed_name_and_mirror_keeps_checksums() {
        for name in DATASETS {
            let spec = official(name).unwrap();
            assert!(spec.files.iter().all(|f| f.sha256.len() == 64));
            let mirrored = spec.clone().with_mirror("http://127.0.0.1:1/m/");
            assert!(mirrored.files.iter().all(|f| f.url.starts_with("http://127.0.0.1:1/m/")));
            assert_eq!(mirrored.files[0].sha256, spec.files[0].sha256);
        }
        assert!(official("imagenet").is_none());
    }
}
