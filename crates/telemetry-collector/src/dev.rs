//! `serve --dev`: a throw-away CA, a certificate for 127.0.0.1 and localhost, and a token, made
//! once under the data directory and reused, so a client's CA setting stays valid.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// The files `--dev` makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevFiles {
    /// The CA certificate a client trusts (`PREFIX_SDK_TELEMETRY_CA_FILE`).
    pub ca: PathBuf,
    /// The server's certificate, signed by the CA.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
    /// The report token.
    pub token: PathBuf,
}

impl DevFiles {
    /// Where the files live in `dir`.
    pub fn in_dir(dir: &Path) -> DevFiles {
        DevFiles {
            ca: dir.join("dev-ca.pem"),
            cert: dir.join("dev-server.pem"),
            key: dir.join("dev-server.key"),
            token: dir.join("dev-token"),
        }
    }

    /// Makes the files unless they all exist already.
    pub fn ensure(dir: &Path) -> anyhow::Result<DevFiles> {
        let files = DevFiles::in_dir(dir);
        std::fs::create_dir_all(dir)?;
        if [&files.ca, &files.cert, &files.key, &files.token]
            .iter()
            .all(|path| path.is_file())
        {
            return Ok(files);
        }
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.distinguished_name.push(
            DnType::CommonName,
            "telemetry-collector dev CA (throw-away)",
        );
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca_params.self_signed(&ca_key)?;

        let server_key = KeyPair::generate()?;
        let mut server_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = server_params.signed_by(&server_key, &ca, &ca_key)?;

        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        write_private(&files.key, server_key.serialize_pem().as_bytes())?;
        write_private(&files.token, format!("{token}\n").as_bytes())?;
        std::fs::write(&files.cert, server.pem())?;
        std::fs::write(&files.ca, ca.pem())?;
        Ok(files)
    }
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(contents)
}
